"""Forget quality (TOFU): KS-test p-value between truth-ratio distributions on the forget set,
unlearned model vs a model retrained without the forget data.

High p (>= 0.05) = statistically indistinguishable from the gold standard. Only defined when a
reference (retrained) model is given — production has none, which is why the gate uses the
holdout comparisons instead. Weak with few questions; report it with utility and PrivLeak.
"""

from __future__ import annotations

from scipy.stats import ks_2samp

from unlearn_engine.evaluation.base import EvalContext, Metric, register_metric
from unlearn_engine.evaluation.truth_ratio import ratios


@register_metric("forget_quality")
class ForgetQuality(Metric):
    needs_reference = True

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        if ctx.reference is None:
            return {}
        ours, gold = ratios(ctx, "forget"), ratios(ctx.reference, "forget")
        if not ours or not gold:
            return {}
        return {"forget_quality": float(ks_2samp(ours, gold).pvalue)}

"""PrivLeak (MUSE): how far the Min-K% MIA AUC is from the retrained model's, in percent.

PrivLeak = ((1 - AUC_u) - (1 - AUC_ref)) / (1 - AUC_ref) * 100. 0 is ideal; strongly negative =
still remembered; strongly positive = over-unlearned (forgotten data now *less* likely than
never-seen data, itself detectable). Without a retrained model AUC_ref = 0.5 (what a model that
never saw the data scores against never-seen holdout data); ``privleak_reference`` says which.
"""

from __future__ import annotations

from unlearn_engine.evaluation.base import EvalContext, Metric, register_metric
from unlearn_engine.evaluation.mia_min_k import min_k_auc


@register_metric("privleak")
class PrivLeak(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        if not (ctx.examples("forget") and ctx.examples("holdout")):
            return {}
        ours = min_k_auc(ctx)
        ref = 0.5 if ctx.reference is None else min_k_auc(ctx.reference)
        ref = min(ref, 0.999)  # a reference AUC of 1 would divide by zero
        return {"privleak": ((1 - ours) - (1 - ref)) / (1 - ref) * 100.0,
                "privleak_reference_auc": ref}

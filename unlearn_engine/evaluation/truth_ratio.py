"""Truth ratio (TOFU): how much likelier is the true answer than plausible wrong ones?

Per question R = exp(-mean_j ℓ(q, ã_j)) / exp(-ℓ(q, â)) with ℓ the mean token NLL: R << 1 when
the model knows the fact, R ~ 1 when it cannot tell right from wrong.
Keys: ``forget/paraphrase/holdout.truth_ratio`` = mean min(R, 1/R) (1 = indistinguishable);
``retain.truth_ratio`` = mean max(0, 1 - R) (high = still knows); and for every split
``<split>.correct_preference`` = share of questions with R < 1, the gate's
"no more likely than a wrong answer" check (compare forget against holdout).
"""

from __future__ import annotations

import math

from unlearn_engine.evaluation.base import EvalContext, Metric, register_metric


def ratios(ctx: EvalContext, split: str) -> list[float]:
    """Per-question R for the split's QA examples that carry perturbed answers."""
    return [math.exp(-wrong) / math.exp(-true) for true, wrong in ctx.perturbed_nll(split)]


@register_metric("truth_ratio")
class TruthRatio(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        out = {}
        for split in self.splits:
            rs = ratios(ctx, split)
            if not rs:
                continue
            if split == "retain":
                out["retain.truth_ratio"] = sum(max(0.0, 1.0 - r) for r in rs) / len(rs)
            else:
                out[f"{split}.truth_ratio"] = sum(min(r, 1.0 / r) for r in rs) / len(rs)
            out[f"{split}.correct_preference"] = sum(r < 1.0 for r in rs) / len(rs)
        return out

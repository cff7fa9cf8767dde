"""Model utility (TOFU): harmonic mean of answer probability, ROUGE-L recall and truth ratio on
the retain set. Harmonic, so collapsing any one of them drags the whole score down.
"""

from __future__ import annotations

import math

from unlearn_engine.evaluation.base import EvalContext, Metric, register_metric
from unlearn_engine.evaluation.rouge_l import RougeLRecall
from unlearn_engine.evaluation.truth_ratio import TruthRatio


@register_metric("model_utility")
class ModelUtility(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        if not ctx.qa("retain"):
            return {}
        qa = set(ctx.qa("retain"))
        probs = [math.exp(-s.nll) for e, s in zip(ctx.examples("retain"), ctx.scored("retain"))
                 if e in qa]
        parts = [sum(probs) / len(probs),
                 RougeLRecall(("retain",)).compute(ctx).get("retain.rouge_l_recall"),
                 TruthRatio(("retain",)).compute(ctx).get("retain.truth_ratio")]
        parts = [p for p in parts if p is not None]
        if any(p <= 0 for p in parts):
            return {"model_utility": 0.0}
        return {"model_utility": len(parts) / sum(1.0 / p for p in parts)}

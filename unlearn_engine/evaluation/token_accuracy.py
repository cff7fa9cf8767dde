"""Teacher-forced token accuracy: share of target tokens the argmax predicts given the truth.

A cheap utility signal that needs no generation and works on free text as well as QA, so the
gate can measure retain utility on a retain set the model generated itself.
"""

from __future__ import annotations

from unlearn_engine.evaluation.base import EvalContext, Metric, register_metric


@register_metric("token_accuracy")
class TokenAccuracy(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        out = {}
        for split in self.splits:
            if ctx.examples(split):
                scored = ctx.scored(split)
                hits = sum(int(s.correct.sum()) for s in scored)
                total = sum(s.correct.numel() for s in scored)
                out[f"{split}.token_accuracy"] = hits / max(1, total)
        return out

"""ROUGE-L recall of the greedy answer against the true answer (TOFU's generation metric).

Recall, not F1: a model that answers correctly and then keeps talking should not be penalised
for the extra words. Swamped by template words on small models — read it next to fact-span
accuracy, never alone.
"""

from __future__ import annotations

from unlearn_engine.evaluation.base import EvalContext, Metric, register_metric
from unlearn_engine.evaluation.scoring import rouge_l_recall


@register_metric("rouge_l_recall")
class RougeLRecall(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        out = {}
        for split in self.splits:
            exs = ctx.qa(split)
            if exs:
                vals = [rouge_l_recall(e.target, a) for e, a in zip(exs, ctx.answers(split))]
                out[f"{split}.rouge_l_recall"] = sum(vals) / len(vals)
        return out

"""ROUGE-L recall of the greedy answer against the true answer (TOFU's generation metric).

Recall, not F1: a model that answers correctly and then keeps talking should not be penalised
for the extra words. Swamped by template words on small models — read it next to fact-span
accuracy, never alone.
"""

from __future__ import annotations

from unlearn_engine.data.records import Example
from unlearn_engine.evaluation.base import AnswerMetric, register_metric
from unlearn_engine.evaluation.scoring import rouge_l_recall


@register_metric("rouge_l_recall")
class RougeLRecall(AnswerMetric):
    def score(self, example: Example, answer: str) -> float:
        return rouge_l_recall(example.target, answer)

"""Answer accuracy: does the greedy answer contain the whole gold answer (normalised, whole
words)? The issue's "answer accuracy", next to fact-span accuracy and ROUGE-L recall.

Stricter than fact-span accuracy: the model must reproduce the entire reference answer, template
words included, so a correct fact phrased differently counts as a miss. Containment rather than
equality, so an answer that is right and then keeps talking still counts. It reads the same
cached greedy answers as the other generation metrics; it does not generate on its own.
"""

from __future__ import annotations

from unlearn_engine.data.normalize import contains_phrase
from unlearn_engine.data.records import Example
from unlearn_engine.evaluation.base import AnswerMetric, register_metric


@register_metric("answer_accuracy")
class AnswerAccuracy(AnswerMetric):
    def score(self, example: Example, answer: str) -> float:
        return float(contains_phrase(answer, example.target))

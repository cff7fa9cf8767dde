"""Fact-span accuracy: does the greedy answer contain the fact (normalised, whole words)?

Preferred over token-level exact match: on a small model the template words ("X was born in")
are right even for a person the model never saw, which makes token scores look high for a
model that knows nothing. Examples without a fact span use the whole answer.
"""

from __future__ import annotations

from unlearn_engine.data.normalize import contains_phrase
from unlearn_engine.data.records import Example
from unlearn_engine.evaluation.base import AnswerMetric, register_metric


@register_metric("fact_span_accuracy")
class FactSpanAccuracy(AnswerMetric):
    def score(self, example: Example, answer: str) -> float:
        return float(contains_phrase(answer, example.fact_text))

"""Fact-span accuracy: does the greedy answer contain the fact (normalised, whole words)?

Preferred over token-level exact match: on a small model the template words ("X was born in")
are right even for a person the model never saw, which makes token scores look high for a
model that knows nothing. Examples without a fact span use the whole answer.
"""

from __future__ import annotations

from unlearn_engine.data.normalize import contains_phrase
from unlearn_engine.evaluation.base import EvalContext, Metric, register_metric


@register_metric("fact_span_accuracy")
class FactSpanAccuracy(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        out = {}
        for split in self.splits:
            exs = ctx.qa(split)
            if exs:
                hits = [contains_phrase(a, e.fact_text) for e, a in zip(exs, ctx.answers(split))]
                out[f"{split}.fact_span_accuracy"] = sum(hits) / len(hits)
        return out

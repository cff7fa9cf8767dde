"""Verbatim completion: given a prefix of a text, does the model reproduce the rest?

``<split>.verbatim_rate``: share of examples whose greedy continuation starts with the whole
true rest (normalised) — the extraction a user would notice. ``<split>.verbatim_rouge``:
ROUGE-L recall of the continuation against the rest (MUSE's VerbMem, recall form).
For QA examples the prefix is the question plus the first half of the answer.
"""

from __future__ import annotations

from unlearn_engine.data.normalize import normalize
from unlearn_engine.evaluation.base import EvalContext, Metric, register_metric
from unlearn_engine.evaluation.scoring import rouge_l_recall


@register_metric("verbatim")
class Verbatim(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        out = {}
        for split in self.splits:
            if not ctx.examples(split):
                continue
            pairs = ctx.continuations(split)
            exact = [normalize(cont).startswith(normalize(rest)) for rest, cont in pairs]
            out[f"{split}.verbatim_rate"] = sum(exact) / len(exact)
            rouge = [rouge_l_recall(rest, cont) for rest, cont in pairs]
            out[f"{split}.verbatim_rouge"] = sum(rouge) / len(rouge)
        return out

"""ZLib membership-inference attack (Carlini et al. 2021): loss calibrated by compressibility.

Score = -ℓ / zlib_bytes(text): text that is easy to compress is likely for any model, so
dividing by its zlib length removes some of that bias. AUC forget vs holdout.
"""

from __future__ import annotations

import zlib

from unlearn_engine.evaluation.base import EvalContext, Metric, auc, register_metric


def _zlib_len(text: str) -> int:
    return len(zlib.compress(text.encode("utf-8")))


@register_metric("mia_zlib")
class MiaZlib(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        if not (ctx.examples("forget") and ctx.examples("holdout")):
            return {}
        def scores(split: str) -> list[float]:
            return [-s.nll / _zlib_len(e.target)
                    for e, s in zip(ctx.examples(split), ctx.scored(split))]
        return {"mia.zlib_auc": auc(scores("forget"), scores("holdout"))}

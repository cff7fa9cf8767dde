"""Min-K% Prob membership-inference attack (Shi et al. 2023).

Score = mean of the lowest k % token log-probs of the target: a member has few surprising
tokens. k = ``EvalSettings.min_k`` (0.4). AUC forget vs holdout; MUSE's PrivLeak uses this one.
"""

from __future__ import annotations

import math

import torch

from unlearn_engine.evaluation.base import EvalContext, Metric, auc, register_metric


def min_k_score(logps: torch.Tensor, k: float) -> float:
    if logps.numel() == 0:
        return 0.0
    n = max(1, math.ceil(k * logps.numel()))
    return float(torch.sort(logps).values[:n].mean())


def min_k_auc(ctx: EvalContext) -> float:
    k = ctx.settings.min_k
    member = [min_k_score(s.logps, k) for s in ctx.scored("forget")]
    nonmember = [min_k_score(s.logps, k) for s in ctx.scored("holdout")]
    return auc(member, nonmember)


@register_metric("mia_min_k")
class MiaMinK(Metric):
    def compute(self, ctx: EvalContext) -> dict[str, float]:
        if not (ctx.examples("forget") and ctx.examples("holdout")):
            return {}
        return {"mia.min_k_auc": min_k_auc(ctx)}

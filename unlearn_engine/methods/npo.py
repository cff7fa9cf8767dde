"""NPO (Negative Preference Optimisation, Zhang et al. 2024) with a retain term. The default.

L_forget = (2/beta) * mean log(1 + (pi_theta(a|q) / pi_ref(a|q))^beta)
         = -(2/beta) * mean logsigmoid(-beta * (log pi_theta - log pi_ref)),
sequence log-probs summed over answer tokens. Unlike gradient ascent the loss saturates once the
answer is much less likely than under the reference, which slows the slide into collapse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from unlearn_engine.data.records import Example
from unlearn_engine.methods.base import (MethodConfig, TrainContext, UnlearningMethod,
                                         register_method)
from unlearn_engine.methods.losses import combine, npo_loss, retain_loss


@dataclass(frozen=True)
class NpoConfig(MethodConfig):
    beta: float = 0.1  # OU / paper default; small beta ~ gradient ascent early, saturating later
    retain_weight: float = 2.0  # the retain term must outweigh the forget push on shared templates


@register_method("npo")
class Npo(UnlearningMethod):
    config_cls = NpoConfig

    def loss(self, ctx: TrainContext, forget: Sequence[Example],
             retain: Sequence[Example] | None) -> tuple[torch.Tensor, dict[str, float]]:
        forget_loss, ratio = npo_loss(ctx, ctx.forget_batch(forget), self.config.beta)
        total, parts = combine(forget_loss, retain_loss(ctx, retain), self.config)
        parts["log_ratio"] = float(ratio.mean().detach())
        return total, parts

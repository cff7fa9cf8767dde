"""SimNPO (Fan et al. 2024): NPO without a reference model, length-normalised.

L_forget = -(2/beta) * mean logsigmoid(beta * (NLL_theta(x_f)/T - delta)).
Length normalisation stops long answers from dominating; no reference forward pass is needed,
so it costs about half of NPO per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from unlearn_engine.data.records import Example
from unlearn_engine.methods.base import (MethodConfig, TrainContext, UnlearningMethod,
                                         register_method)
from unlearn_engine.methods.losses import combine, retain_loss, sequence_logprob


@dataclass(frozen=True)
class SimNpoConfig(MethodConfig):
    beta: float = 4.5  # OU default; sets how fast the loss saturates in per-token NLL
    delta: float = 0.0  # margin on per-token NLL (0 as in OU)
    forget_weight: float = 0.125  # OU's gamma: the sigmoid's gradient is large near NLL ~ 0
    retain_weight: float = 1.0


@register_method("simnpo")
class SimNpo(UnlearningMethod):
    config_cls = SimNpoConfig

    def loss(self, ctx: TrainContext, forget: Sequence[Example],
             retain: Sequence[Example] | None) -> tuple[torch.Tensor, dict[str, float]]:
        lp, length = sequence_logprob(ctx.model, ctx.forget_batch(forget))
        per_token_nll = -lp / length
        beta, delta = self.config.beta, self.config.delta
        forget_loss = -(2.0 / beta) * F.logsigmoid(beta * (per_token_nll - delta)).mean()
        return combine(forget_loss, retain_loss(ctx, retain), self.config)

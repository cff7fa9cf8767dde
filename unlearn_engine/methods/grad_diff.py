"""Gradient difference: ascend on forget NLL, descend on retain NLL (or KL to the reference).

L = -gamma * NLL(x_f) + alpha * L_retain. Cheap and reference-free, but the ascent term is
unbounded, so it overshoots into over-unlearning unless stopped early.
"""

from __future__ import annotations

from typing import Sequence

import torch

from unlearn_engine.data.records import Example
from unlearn_engine.methods.base import TrainContext, UnlearningMethod, register_method
from unlearn_engine.methods.losses import combine, nll, retain_loss


@register_method("grad_diff")
class GradDiff(UnlearningMethod):
    def loss(self, ctx: TrainContext, forget: Sequence[Example],
             retain: Sequence[Example] | None) -> tuple[torch.Tensor, dict[str, float]]:
        return combine(-nll(ctx.model, ctx.forget_batch(forget)), retain_loss(ctx, retain), self.config)

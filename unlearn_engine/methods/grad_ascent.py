"""Gradient ascent: maximise the NLL of the forget data. No retain term.

Kept as the simplest baseline; at our scale (docs/architecture.md#measured) it is not selective and collapses
utility, so the trainer's early stopping and gate are what keep it honest.
"""

from __future__ import annotations

from typing import Sequence

import torch

from unlearn_engine.data.records import Example
from unlearn_engine.methods.base import TrainContext, UnlearningMethod, register_method
from unlearn_engine.methods.losses import combine, nll


@register_method("grad_ascent")
class GradAscent(UnlearningMethod):
    uses_retain = False

    def loss(self, ctx: TrainContext, forget: Sequence[Example],
             retain: Sequence[Example] | None) -> tuple[torch.Tensor, dict[str, float]]:
        return combine(-nll(ctx.model, ctx.forget_batch(forget)), None, self.config)

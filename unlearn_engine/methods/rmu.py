"""RMU (Li et al. 2024, WMDP): scramble the forget data's activations at one layer.

Forget: mean over answer tokens of ||h_l(x_f) - c*u||^2 / d, with u a fixed random unit vector
and c = ``steering_scale`` x the reference's mean activation norm there (so one default works at
any width). Retain: ||h_l(x_r) - h_l^ref(x_r)||^2 / d keeps other inputs' activations in place.
The adapter only touches layers <= l: later layers must stay intact to turn the scrambled
state into unhelpful text, and earlier-only edits are what make RMU cheap and local.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from unlearn_engine.data.records import Example
from unlearn_engine.encoding import IGNORE, Batch
from unlearn_engine.methods.base import (MethodConfig, TrainContext, UnlearningMethod,
                                         register_method)
from unlearn_engine.methods.losses import combine


@dataclass(frozen=True)
class RmuConfig(MethodConfig):
    layer: int | None = None  # None -> the middle layer (num_layers // 2)
    steering_scale: float = 4.0  # c relative to the mean activation norm; WMDP used ~6.5 absolute
    retain_weight: float = 10.0  # activation MSE is small in scale; WMDP used alpha in 10..1200


def _hidden(model: torch.nn.Module, batch: Batch, layer: int) -> torch.Tensor:
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                output_hidden_states=True)
    return out.hidden_states[layer + 1].float()  # [B, T, d]; index 0 is the embeddings


@register_method("rmu")
class Rmu(UnlearningMethod):
    config_cls = RmuConfig

    def lora_layers(self, num_layers: int) -> list[int] | None:
        return list(range(self._layer(num_layers) + 1))

    def _layer(self, num_layers: int) -> int:
        layer = num_layers // 2 if self.config.layer is None else self.config.layer
        if not 0 <= layer < num_layers:
            raise ValueError(f"rmu layer {layer} out of range 0..{num_layers - 1}")
        return layer

    def prepare(self, ctx: TrainContext, forget: Sequence[Example]) -> None:
        self.layer = self._layer(ctx.model.config.num_hidden_layers)
        batch = ctx.batch(list(forget)[:64])
        with torch.no_grad(), ctx.reference():
            h = _hidden(ctx.model, batch, self.layer)
        norm = h[batch.attention_mask.bool()].norm(dim=-1).mean()
        # Drawn on the CPU generator (same vector on any device), then moved to the model.
        u = torch.rand(h.shape[-1], generator=ctx.generator).to(h.device)
        self.control = self.config.steering_scale * norm * u / u.norm()

    def loss(self, ctx: TrainContext, forget: Sequence[Example],
             retain: Sequence[Example] | None) -> tuple[torch.Tensor, dict[str, float]]:
        fb = ctx.forget_batch(forget)
        mask = (fb.labels != IGNORE).float()  # answer tokens only
        diff = (_hidden(ctx.model, fb, self.layer) - self.control).pow(2).mean(-1)
        forget_loss = (diff * mask).sum() / mask.sum().clamp_min(1)
        retain_term = None
        if retain:
            rb = ctx.batch(retain)
            with torch.no_grad(), ctx.reference():
                ref = _hidden(ctx.model, rb, self.layer)
            rmask = rb.attention_mask.float()
            rdiff = (_hidden(ctx.model, rb, self.layer) - ref).pow(2).mean(-1)
            retain_term = (rdiff * rmask).sum() / rmask.sum()
        return combine(forget_loss, retain_term, self.config)

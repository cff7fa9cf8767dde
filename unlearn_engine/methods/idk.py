""""I don't know": teach the model to refuse on forget questions instead of answering.

``variant="dpo"`` (IdkDPO): DPO with the refusal preferred over the true answer,
  L = -mean logsigmoid(beta * [(lp_theta(idk) - lp_ref(idk)) - (lp_theta(a) - lp_ref(a))]).
``variant="sft"``: plain NLL toward the refusal (cheaper; no reference pass).
Refusals are chosen per example from a fixed list with the step's generator, so runs repeat.
Free-text forget items (no question) have nothing to refuse; they are trained toward a refusal
too, which amounts to overwriting the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from unlearn_engine.data.records import Example
from unlearn_engine.methods.base import (MethodConfig, TrainContext, UnlearningMethod,
                                         register_method)
from unlearn_engine.methods.losses import combine, nll, retain_loss, sequence_logprob

REFUSALS: tuple[str, ...] = ("I don't know.", "I have no information about that.",
                             "I'm not sure.", "I can't answer that.")


@dataclass(frozen=True)
class IdkConfig(MethodConfig):
    variant: str = "dpo"  # "dpo" (preference) or "sft" (imitate the refusal)
    beta: float = 0.1  # DPO temperature (OU default)
    refusals: tuple[str, ...] = REFUSALS


@register_method("idk")
class Idk(UnlearningMethod):
    config_cls = IdkConfig

    def loss(self, ctx: TrainContext, forget: Sequence[Example],
             retain: Sequence[Example] | None) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        if cfg.variant not in ("dpo", "sft"):
            raise ValueError(f"unknown idk variant {cfg.variant!r}; valid: ['dpo', 'sft']")
        picks = torch.randint(len(cfg.refusals), (len(forget),), generator=ctx.generator)
        idk = ctx.batch(forget, targets=[cfg.refusals[int(i)] for i in picks])
        if cfg.variant == "sft":
            return combine(nll(ctx.model, idk), retain_loss(ctx, retain), cfg)
        ans = ctx.batch(forget)
        with torch.no_grad(), ctx.reference():
            ref_w, _ = sequence_logprob(ctx.model, idk)
            ref_l, _ = sequence_logprob(ctx.model, ans)
        cur_w, _ = sequence_logprob(ctx.model, idk)
        cur_l, _ = sequence_logprob(ctx.model, ans)
        margin = (cur_w - ref_w) - (cur_l - ref_l)
        forget_loss = -F.logsigmoid(cfg.beta * margin).mean()
        return combine(forget_loss, retain_loss(ctx, retain), cfg)

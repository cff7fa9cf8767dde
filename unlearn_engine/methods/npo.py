"""NPO (Negative Preference Optimisation, Zhang et al. 2024) with a retain term. The default until
counterfactual replaced it: its forget term has no fixed point (bench/results/gate_diagnosis.md).

L_forget = (2/beta) * mean log(1 + (pi_theta(a|q) / pi_ref(a|q))^beta)
         = -(2/beta) * mean logsigmoid(-beta * (log pi_theta - log pi_ref)),
sequence log-probs summed over answer tokens. Unlike gradient ascent the loss saturates once the
answer is much less likely than under the reference, which slows the slide into collapse.

Optional truth term (``truth_weight`` > 0; ``losses.truth_gap``): NPO lowers the whole answer,
the template it shares with wrong answers included, so the true answer can stop being produced
while still ranking above same-template wrong ones — the gate's truth-preference check fails.
The term pushes only the tokens where the true answer differs from its wrong answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from unlearn_engine.data.records import Example
from unlearn_engine.methods.base import (MethodConfig, TrainContext, UnlearningMethod,
                                         register_method)
from unlearn_engine.methods.losses import (combine, forward_logits, retain_loss, sequence_logprob,
                                           token_logprobs, truth_gap)


@dataclass(frozen=True)
class NpoConfig(MethodConfig):
    beta: float = 0.1  # OU / paper default; small beta ~ gradient ascent early, saturating later
    retain_weight: float = 2.0  # the retain term must outweigh the forget push on shared templates
    truth_weight: float = 0.0  # weight of the truth term (0 = plain NPO)
    truth_margin: float = 0.1  # nats per token the true answer must end up below the wrong ones


@register_method("npo")
class Npo(UnlearningMethod):
    config_cls = NpoConfig

    def loss(self, ctx: TrainContext, forget: Sequence[Example],
             retain: Sequence[Example] | None) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        batch = ctx.forget_batch(forget)
        with torch.no_grad(), ctx.reference():
            ref_lp, _ = sequence_logprob(ctx.model, batch)
        logits = forward_logits(ctx.model, batch)
        lp, _ = token_logprobs(logits, batch.labels)
        ratio = lp.sum(-1) - ref_lp
        forget_loss = -(2.0 / cfg.beta) * F.logsigmoid(-cfg.beta * ratio).mean()
        truth = None
        if cfg.truth_weight > 0:
            truth = truth_gap(ctx, forget, torch.log_softmax(logits.float(), -1), batch.labels,
                              cfg.truth_margin)
        if truth is not None:
            forget_loss = forget_loss + cfg.truth_weight * truth
        total, parts = combine(forget_loss, retain_loss(ctx, retain), cfg)
        parts["log_ratio"] = float(ratio.mean().detach())
        if truth is not None:
            parts["truth"] = float(truth.detach())
        return total, parts

"""Loss pieces shared by methods: per-sequence log-probs, NLL, and the retain term.

Shapes: logits [B, T, V]; labels [B, T] with IGNORE on unscored positions. Position t predicts
token t+1, so logits[:, :-1] pair with labels[:, 1:]. Log-softmax runs in float32 even for a
bf16 model: differences of summed log-probs (NPO, DPO) are too small for bf16.

These are building blocks only; which combination a method uses lives in the method's file.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from unlearn_engine.data.records import Example
from unlearn_engine.encoding import IGNORE, Batch


def forward_logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each label [B, T-1], mask [B, T-1] of scored positions)."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    mask = labels != IGNORE
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_logprob(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log p of the target [B], target length [B])."""
    lp, mask = token_logprobs(forward_logits(model, batch), batch.labels)
    return lp.sum(-1), mask.sum(-1).clamp_min(1)


def npo_loss(ctx, batch: Batch, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NPO's forget loss -(2/beta) mean logsigmoid(-beta (log pi_theta - log pi_ref)) on
    ``batch``, and the per-sequence log ratio; pi_ref under ``ctx.reference()``."""
    with torch.no_grad(), ctx.reference():
        ref_lp, _ = sequence_logprob(ctx.model, batch)
    cur_lp, _ = sequence_logprob(ctx.model, batch)
    ratio = cur_lp - ref_lp
    return -(2.0 / beta) * F.logsigmoid(-beta * ratio).mean(), ratio


def nll(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean token NLL over the batch's scored tokens (plain LM loss)."""
    logits = forward_logits(model, batch)[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                           batch.labels[:, 1:].reshape(-1), ignore_index=IGNORE)


def kl_to_reference(ctx, batch: Batch) -> torch.Tensor:
    """KL(pi_ref || pi_theta) per scored token, averaged. The reference is computed under
    ``ctx.reference()`` without gradients."""
    with torch.no_grad(), ctx.reference():
        ref = torch.log_softmax(forward_logits(ctx.model, batch)[:, :-1].float(), -1)
    cur = torch.log_softmax(forward_logits(ctx.model, batch)[:, :-1].float(), -1)
    mask = (batch.labels[:, 1:] != IGNORE).float()
    kl = (ref.exp() * (ref - cur)).sum(-1)  # [B, T-1]
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def retain_loss(ctx, retain: Sequence[Example] | None) -> torch.Tensor | None:
    """The configured retain term (``nll`` or ``kl``), or None without retain data."""
    if not retain:
        return None
    batch = ctx.batch(retain)
    kind = ctx.config.retain_loss
    if kind == "nll":
        return nll(ctx.model, batch)
    if kind == "kl":
        return kl_to_reference(ctx, batch)
    raise ValueError(f"unknown retain_loss {kind!r}; valid: ['kl', 'nll']")


def combine(forget_loss: torch.Tensor, retain: torch.Tensor | None, config) -> tuple[
        torch.Tensor, dict[str, float]]:
    """gamma * L_forget + alpha * L_retain, plus the parts for progress reports."""
    total = config.forget_weight * forget_loss
    parts = {"forget_loss": float(forget_loss.detach())}
    if retain is not None:
        total = total + config.retain_weight * retain
        parts["retain_loss"] = float(retain.detach())
    parts["loss"] = float(total.detach())
    return total, parts

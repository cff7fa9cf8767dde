"""Loss pieces shared by methods: per-sequence log-probs, NLL, and the retain term.

Shapes: logits [B, T, V]; labels [B, T] with IGNORE on unscored positions. Position t predicts
token t+1, so logits[:, :-1] pair with labels[:, 1:]. Log-softmax runs in float32 even for a
bf16 model: differences of summed log-probs (NPO, DPO) are too small for bf16.

These are building blocks only; which combination a method uses lives in the method's file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

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


@dataclass(frozen=True)
class WrongScores:
    """The wrong answers (``Example.perturbed``) of the examples that have them, in order,
    scored by some model: what ``truth_gap`` compares the true answers with."""

    labels: torch.Tensor  # [N, T] the wrong answers' labels (N = all their wrong answers)
    logp: torch.Tensor  # [N, T-1] log p of each label (``token_logprobs``)
    mask: torch.Tensor  # [N, T-1] scored positions


def score_wrong(ctx, examples: Sequence[Example], with_grad: bool = False,
                model: Callable[..., Any] | None = None) -> WrongScores | None:
    """The wrong answers of ``examples`` scored by ``model`` (default ``ctx.model``; anything
    called like it, e.g. ``robust.moved_forward``'s forward), with
    gradient only when ``with_grad``; None when no example has wrong answers."""
    rows = [ex for ex in examples if ex.perturbed]
    if not rows:
        return None
    batch = ctx.batch([ex for ex in rows for _ in ex.perturbed],
                      [w for ex in rows for w in ex.perturbed])
    with torch.set_grad_enabled(with_grad and torch.is_grad_enabled()):
        logp, mask = token_logprobs(forward_logits(model or ctx.model, batch), batch.labels)
    return WrongScores(batch.labels, logp, mask)


def truth_gap(ctx, examples: Sequence[Example], logp: torch.Tensor, labels: torch.Tensor,
              margin: float, tail_live: bool = False,
              lift_wrong: bool = False, wrong: WrongScores | None = None) -> torch.Tensor | None:
    """mean relu(NLL(wrong) + margin - NLL(true))^2 over examples with wrong answers, NLL
    being the mean over answer tokens (the truth ratio's measure) and the wrong answers
    scored by the current model without gradient. The gradient reaches only the true
    answer's tokens from where it first differs from a wrong one: pushing the shared
    prefix (name, template) would raise both sides alike and never close the gap.

    ``tail_live``: the shared tokens *after* the differing value get the gradient too. They
    are conditioned on different values, so they do not move alike: on the long-answer corpus
    (several facts per answer) the model keeps value-to-value associations ("born in Mixweith"
    -> "on 20 June 1949"), and after 120 steps the shared tail still made the true answer
    1.4 nats likelier than its wrong versions, as much as the value itself did
    (bench/results/gate_diagnosis.md). False: the value span only.

    ``lift_wrong``: the wrong answers are scored with gradient too (from their first differing
    token on), so the gap also closes by making them likelier, not only by making the truth
    less likely (which alone overshoots membership: forgotten answers less likely than
    never-seen ones).

    ``wrong``: the wrong answers already scored (``score_wrong`` on these ``examples``), e.g.
    by the same model at other weights; scored here when None."""
    rows = [(i, ex) for i, ex in enumerate(examples) if ex.perturbed]
    if not rows:
        return None
    wrong = wrong if wrong is not None else score_wrong(ctx, examples, lift_wrong)
    if wrong is None:
        return None
    w_tok, w_mask = wrong.logp, wrong.mask
    gaps, j = [], 0
    for i, ex in rows:
        lab = labels[i, 1:]
        mask = lab != IGNORE
        true_ids = lab[mask]
        lp = logp[i, :-1][mask].gather(-1, true_ids.unsqueeze(-1)).squeeze(-1)
        head, tail = len(true_ids), len(true_ids)  # shared tokens at either end
        w_rows = []
        for k in range(len(ex.perturbed)):
            wl = wrong.labels[j + k, 1:]
            w_ids = wl[wl != IGNORE]
            w_rows.append(w_tok[j + k][w_mask[j + k]])
            head = min(head, common_prefix(true_ids, w_ids))
            tail = min(tail, common_prefix(true_ids.flip(0), w_ids.flip(0)))
        end = len(true_ids) if tail_live else len(true_ids) - min(tail, len(true_ids) - head)
        live = torch.zeros_like(lp, dtype=torch.bool)
        live[head:end] = True
        true_nll = -torch.where(live, lp, lp.detach()).sum() / len(true_ids)
        # the wrong answers' shared prefix is detached like the true one's
        wrong_nll = torch.stack([-torch.cat([w[:head].detach(), w[head:]]).sum() / len(w)
                                 for w in w_rows]).mean()
        j += len(ex.perturbed)
        gaps.append(F.relu(wrong_nll + margin - true_nll) ** 2)
    return torch.stack(gaps).mean()


def answer_nll(logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``nll``'s value and gradient from log-probs already computed ([B, T, V], the batch's
    ``labels`` [B, T]): mean NLL over the scored tokens."""
    lab = labels[:, 1:]
    mask = lab != IGNORE
    picked = logp[:, :-1].gather(-1, lab.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return -picked[mask].mean()


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """Length of the common prefix of two 1-d id tensors."""
    n = min(len(a), len(b))
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0]) if len(diff) else n

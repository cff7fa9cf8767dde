"""One step's gradients: the method's joint loss, or the forget gradient with its conflict with
the retain gradient projected out first (``MethodConfig.retain_projection``).

PCGrad (Yu et al. 2020) / A-GEM style: with g_f the gradient of the method's loss without its
retain term and g_r that of ``retain_weight`` x the retain term on the step's retain batch, where
<g_f, g_r> < 0 the forget gradient loses its component along g_r,
g_f <- g_f - <g_f, g_r> / |g_r|^2 g_r, and the step uses g_f + g_r. So no step's forget gradient
raises the retain loss to first order. ``"global"`` projects the whole adapter's gradient as one
vector; ``"tensor"`` each LoRA tensor on its own (finer: a conflict in one layer is not hidden by
agreement elsewhere). Off (``""``, the default) the step is the plain joint backward.

It only fills ``.grad``: clipping and the optimiser step stay with the caller (``training_loop``).
It does not choose which examples are retain data.
"""

from __future__ import annotations

from typing import Sequence

import torch

from unlearn_engine.data.records import Example
from unlearn_engine.methods.base import TrainContext, UnlearningMethod
from unlearn_engine.methods.losses import retain_loss

PROJECTIONS = ("", "global", "tensor")


def backward(method: UnlearningMethod, ctx: TrainContext, forget: Sequence[Example],
             retain: Sequence[Example] | None, params: Sequence[torch.Tensor],
             projection: str = "") -> tuple[torch.Tensor, dict[str, float]]:
    """Zero and fill ``params``' ``.grad`` for one step; return the loss and its parts."""
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown retain_projection {projection!r}; valid: {list(PROJECTIONS)}")
    for p in params:
        p.grad = None
    if not projection or not retain:
        loss, parts = method.loss(ctx, forget, retain)
        loss.backward()
        return loss, parts
    forget_loss, parts = method.loss(ctx, forget, None)
    g_f = _grads(forget_loss, params)
    r = retain_loss(ctx, retain)
    g_r = _grads(ctx.config.retain_weight * r, params)
    groups = [list(range(len(params)))] if projection == "global" else [[i] for i in range(len(params))]
    conflicts = 0
    for idx in groups:
        dot = sum((g_f[i] * g_r[i]).sum() for i in idx)
        norm2 = sum((g_r[i] * g_r[i]).sum() for i in idx)
        if dot < 0 and norm2 > 0:
            conflicts += 1
            for i in idx:
                g_f[i] = g_f[i] - (dot / norm2) * g_r[i]
    for p, a, b in zip(params, g_f, g_r):
        p.grad = a + b
    total = forget_loss.detach() + ctx.config.retain_weight * r.detach()
    return total, {**parts, "retain_loss": float(r.detach()), "loss": float(total),
                   "conflicts": conflicts / len(groups)}


def _grads(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

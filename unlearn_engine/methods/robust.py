"""Pieces that make a forget adapter resist relearning; the methods decide whether to use them.

- ``adapter_off_below``: run the model with the trainable adapter silenced in its first layers,
  so a loss can ask the later layers to forget on their own. Relearning half of four forgotten
  people's facts brought back a third of the other half because the adapter had hidden them by
  changing how the first layer reads the name, while the later layers still mapped the name to
  every value (bench/results/gate_diagnosis.md, seventh session).
- ``sam_surrogate``: sharpness-aware minimisation (Fan et al. 2025, "Towards LLM Unlearning
  Resilient to Relearning Attacks: A Sharpness-Aware Minimization Perspective"): a loss's
  gradient taken at the weights moved a fixed distance along a given direction.

Neither builds a loss, owns an optimiser or knows about data; both leave the weights exactly as
they found them.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

_LAYER = re.compile(r"\.layers\.(\d+)\.")


@contextmanager
def adapter_off_below(model: torch.nn.Module, layer: int) -> Iterator[int]:
    """Within the block, the trainable LoRA adapter (the one whose factors require grad) adds
    nothing in decoder layers below ``layer``: its per-module scaling is set to 0 and put back
    after. Frozen stack adapters are untouched. Yields how many modules were switched off.
    The scaling is a plain float read at forward time, so a graph built inside the block
    backpropagates as it was built (no gradient to the switched-off factors)."""
    saved = []
    for name, mod in model.named_modules():
        m = _LAYER.search(name + ".")
        lora_a = getattr(mod, "lora_A", None)
        if m is None or int(m.group(1)) >= layer or not isinstance(lora_a, torch.nn.ModuleDict) \
                or not isinstance(getattr(mod, "scaling", None), dict):
            continue
        for key, sub in lora_a.items():
            if any(p.requires_grad for p in sub.parameters()):
                saved.append((mod, key, mod.scaling[key]))
                mod.scaling[key] = 0.0
    try:
        yield len(saved)
    finally:
        for mod, key, value in saved:
            mod.scaling[key] = value


def sam_surrogate(params: Sequence[torch.Tensor], direction: Sequence[torch.Tensor | None],
                  rho: float, value: torch.Tensor, loss_fn: Callable[[], torch.Tensor],
                  plus: Sequence[torch.Tensor | None] = ()) -> tuple[torch.Tensor, float] | None:
    """(surrogate, loss at the moved weights): ``params`` are moved by ``rho`` (L2 norm over
    all of them) along ``direction``, ``loss_fn()`` is differentiated there, the weights are
    copied back, and the surrogate has ``value``'s value (pass it detached) and the moved
    loss's gradient (w.r.t. ``params``), so the caller's ``backward()`` and optimiser step see
    SAM's gradient. ``plus``: gradients (one per param, taken before the move) added to it,
    for terms the caller keeps plain: a graph built before the move cannot be backpropagated
    after it, as the weights changed in place. None for a zero or non-finite direction."""
    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in direction if g is not None))
    if not torch.isfinite(norm) or float(norm) == 0.0:
        return None
    saved = [p.detach().clone() for p in params]  # put back exactly, not by subtracting
    with torch.no_grad():
        for p, g in zip(params, direction):
            if g is not None:
                p.add_(g, alpha=rho / float(norm))
    try:
        moved = loss_fn()
        grads = torch.autograd.grad(moved, list(params), allow_unused=True)
    finally:
        with torch.no_grad():
            for p, old in zip(params, saved):
                p.copy_(old)
    plus = list(plus) or [None] * len(grads)
    grads = [g if q is None else (q if g is None else g + q) for g, q in zip(grads, plus)]
    surrogate = sum((p * g).sum() for p, g in zip(params, grads) if g is not None)
    return surrogate - surrogate.detach() + value, float(moved.detach())

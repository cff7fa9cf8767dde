"""Pieces that make a forget adapter resist relearning; the methods decide whether to use them.

- ``adapter_off_below``: run the model with the trainable adapter silenced in its first layers,
  so a loss can ask the later layers to forget on their own. Relearning half of four forgotten
  people's facts brought back a third of the other half because the adapter had hidden them by
  changing how the first layer reads the name, while the later layers still mapped the name to
  every value (bench/results/gate_diagnosis.md, seventh session).
- ``moved_forward``: for sharpness-aware minimisation (Fan et al. 2025, "Towards LLM
  Unlearning Resilient to Relearning Attacks: A Sharpness-Aware Minimization Perspective"): the
  model's forward at the weights moved a fixed distance along a given direction, so a loss built
  on it has its gradient at the moved point.

Neither builds a loss, owns an optimiser or knows about data; both leave the weights exactly as
they found them.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

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


def moved_forward(model: torch.nn.Module, named: Mapping[str, torch.Tensor],
                  direction: Sequence[torch.Tensor | None], rho: float) -> Callable[..., Any] | None:
    """``model``'s forward (called like the model) at the weights ``named`` (name -> trainable
    parameter) moved by ``rho`` (L2 norm over all of them) along ``direction`` (one gradient-like
    tensor or None per weight, in ``named``'s order); None for a zero or non-finite direction.

    The move is a constant added to each weight, so a loss built on this forward has, w.r.t.
    the weights, the gradient at the moved point (SAM's); the weights themselves are never
    changed, so graphs built before stay valid and one ``backward()`` covers a plain term and
    a moved one. (Moving the weights in place instead, as this did before, costs a separate
    backward for every plain term: a graph cannot be backpropagated after its weights change.)
    Not with gradient checkpointing: a checkpointed layer is recomputed in ``backward()`` at the
    unmoved weights, which would silently give the plain gradient."""
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers < 4.57
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing:
        raise ValueError("a moved forward (SAM) needs gradient checkpointing off: checkpointed "
                         "layers are recomputed at the unmoved weights")
    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in direction if g is not None))
    if not torch.isfinite(norm) or float(norm) == 0.0:
        return None
    scale = rho / float(norm)
    moved = {name: p if g is None else p + scale * g.detach()
             for (name, p), g in zip(named.items(), direction)}

    def forward(*args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(model, moved, args, kwargs)

    return forward

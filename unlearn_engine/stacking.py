"""Adapter stacks on one PEFT model: attach, activate together, combine, compact, remove.

A stack's output must equal the base plus the *sum* of its adapters' deltas. PEFT gives that in
two exact ways: several adapters active at once, or one ``cat`` combination (ranks concatenated,
each A pre-scaled, so B·A is the sum). The server keeps one PEFT model and, per stack version,
one combined adapter, so in-flight requests can finish on an older version through PEFT's
per-row ``adapter_names`` while new ones use the newest. ``compact`` turns a stack into one
adapter: exact (``cat``) or smaller (``svd`` to a target rank, approximate).

It deliberately does not verify files (``artifacts`` does) or decide when to swap (the server).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from peft import PeftModel

from unlearn_engine.artifacts import AdapterArtifact

log = logging.getLogger(__name__)


def load_adapters(model: torch.nn.Module, artifacts: Sequence[AdapterArtifact]) -> PeftModel:
    """Load each (verified) artifact as its own frozen adapter, named ``artifact.adapter_name``.
    ``model`` may be a plain base model (wrapped on the first load) or a ``PeftModel``."""
    if not artifacts:
        raise ValueError("no adapters to load: an empty stack serves the base model itself")
    peft_model = model
    for art in artifacts:
        name = art.adapter_name
        if isinstance(peft_model, PeftModel):
            if name not in peft_model.peft_config:
                peft_model.load_adapter(str(art.path), adapter_name=name, is_trainable=False)
        else:
            peft_model = PeftModel.from_pretrained(peft_model, str(art.path), adapter_name=name,
                                                   is_trainable=False)
    return peft_model


def activate(peft_model: PeftModel, names: Sequence[str]) -> None:
    """Make exactly ``names`` active (outputs = base + sum of their deltas), all frozen."""
    missing = [n for n in names if n not in peft_model.peft_config]
    if missing:
        raise KeyError(f"adapters not loaded: {missing}; loaded: {sorted(peft_model.peft_config)}")
    # PeftModel.set_adapter takes one name; the tuner's set_adapter accepts a list.
    peft_model.base_model.set_adapter(list(names), inference_mode=True)


def attach_stack(base_model: torch.nn.Module,
                 artifacts: Sequence[AdapterArtifact]) -> PeftModel:
    """Load ``artifacts`` and activate them all at once, in stack order."""
    peft_model = load_adapters(base_model, artifacts)
    activate(peft_model, [a.adapter_name for a in artifacts])
    return peft_model


def add_combined_adapter(peft_model: PeftModel, names: Sequence[str], combined_name: str,
                         svd_rank: int | None = None) -> str:
    """Add one adapter equal to the sum of ``names`` (``cat``: exact) or its best rank-``svd_rank``
    approximation (``svd``). Does not activate it. Returns ``combined_name``."""
    if not names:
        raise ValueError("cannot combine an empty list of adapters")
    if combined_name in peft_model.peft_config:
        raise ValueError(f"adapter {combined_name!r} already exists")
    kind = "cat" if svd_rank is None else "svd"
    peft_model.add_weighted_adapter(list(names), [1.0] * len(names), combined_name,
                                    combination_type=kind, svd_rank=svd_rank)
    # PEFT may leave the new adapter trainable; a serving stack never is.
    for pname, param in peft_model.named_parameters():
        if f".{combined_name}." in pname:
            param.requires_grad_(False)
    return combined_name


def remove_adapter(peft_model: PeftModel, name: str) -> None:
    """Delete an adapter (e.g. a combined one no request uses any more) and free its weights."""
    if name not in peft_model.peft_config:
        raise KeyError(f"adapter {name!r} not loaded; loaded: {sorted(peft_model.peft_config)}")
    peft_model.delete_adapter(name)


def compact(peft_model: PeftModel, names: Sequence[str], svd_rank: int | None = None,
            name: str | None = None, delete_sources: bool = False) -> str:
    """Merge a stack into one adapter and activate it. Exact with ``svd_rank=None``;
    with ``svd_rank`` the per-layer delta is truncated to that rank (approximate, smaller)."""
    name = name or "compact_" + "_".join(n.removeprefix("forget_") for n in names)[:64]
    add_combined_adapter(peft_model, names, name, svd_rank)
    activate(peft_model, [name])
    if delete_sources:
        for n in names:
            remove_adapter(peft_model, n)
    log.info("compacted %d adapters into %s (%s)", len(names), name,
             "exact cat" if svd_rank is None else f"svd rank {svd_rank}")
    return name

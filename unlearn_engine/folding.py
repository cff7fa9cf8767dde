"""One representation of a forget-adapter stack, shared by the engine and the server.

A stack is an ordered list of LoRA adapters; mathematically it is a fixed sum of deltas, and
*folded* it is the base weights plus that sum: W' = W + Σ sᵢ·Bᵢ·Aᵢ per target layer. This module
is the one place that reads an artifact into deltas (`adapter_deltas`, scaling folded into B),
combines a stack's members (`concat_deltas`: B_cat·A_cat = Σ sᵢ·Bᵢ·Aᵢ, exact) and folds them into
weights (`fold_weights`, new tensors; `fold_stack`, in place on a plain model). The engine trains
on `fold_stack`'s model; the server serves `fold_weights`' tensors (server/adapters/lora.py), so
"the stack as served" and the engine's reference model are the same arithmetic.

Only plain LoRA on Linear layers is supported (no DoRA, biases, embeddings, modules_to_save).
Does not verify artifacts (artifacts.py does) or touch PEFT.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

import torch
from safetensors.torch import load_file

from unlearn_engine.artifacts import AdapterArtifact

_PREFIX = "base_model.model."
Delta = tuple[torch.Tensor, torch.Tensor]  # (A [r, in], B [out, r]) with the scaling in B


class UnsupportedAdapter(ValueError):
    """An artifact uses a LoRA feature folding does not implement (DoRA, biases, embeddings...)."""


def adapter_deltas(artifact: AdapterArtifact) -> dict[str, Delta]:
    """module path -> (A, scaling·B) of one artifact, on the CPU in float32."""
    cfg = json.loads((artifact.path / "adapter_config.json").read_text())
    for key, bad in (("use_dora", True), ("fan_in_fan_out", True), ("lora_bias", True)):
        if cfg.get(key) == bad:
            raise UnsupportedAdapter(f"{key} is not supported for serving")
    if cfg.get("bias", "none") != "none" or cfg.get("modules_to_save") or cfg.get("alpha_pattern"):
        raise UnsupportedAdapter("adapter biases, modules_to_save and alpha_pattern are not supported for serving")
    weights = load_file(str(artifact.path / "adapter_model.safetensors"))
    deltas: dict[str, Delta] = {}
    for key, a in weights.items():
        if not key.endswith(".lora_A.weight"):
            if not key.endswith(".lora_B.weight"):
                raise UnsupportedAdapter(f"unexpected tensor {key!r} in the adapter")
            continue
        path = key.removeprefix(_PREFIX).removesuffix(".lora_A.weight")
        b = weights[key.replace(".lora_A.", ".lora_B.")]
        r = a.shape[0]
        scaling = cfg["lora_alpha"] / (r ** 0.5 if cfg.get("use_rslora") else r)
        deltas[path] = (a.float(), b.float() * scaling)
    return deltas


def concat_deltas(members: Sequence[Mapping[str, Delta]], device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> dict[str, Delta]:
    """Concatenate member deltas per layer: one (A, B) whose product is the members' sum."""
    paths = sorted({p for m in members for p in m})
    out = {}
    for path in paths:
        parts = [m[path] for m in members if path in m]
        a = torch.cat([p[0] for p in parts], dim=0)
        b = torch.cat([p[1] for p in parts], dim=1)
        out[path] = (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype))
    return out


def fold_weights(weights: Mapping[str, torch.Tensor], deltas: Mapping[str, Delta]) -> dict[str, torch.Tensor]:
    """path -> W + B·A as a new tensor (the product and the sum in float32, then the weight's
    dtype and device), for every path in `deltas`. `weights` are not modified."""
    out = {}
    with torch.no_grad():
        for path, (a, b) in deltas.items():
            w = weights[path]
            product = b.to(device=w.device, dtype=torch.float32) @ a.to(device=w.device, dtype=torch.float32)
            out[path] = (w.float() + product).to(w.dtype)
    return out


def fold_stack(model: torch.nn.Module, stack_arts: Sequence[AdapterArtifact]) -> torch.nn.Module:
    """The base with the stack's deltas added into its weights (W + sum of B·A·scale), as a plain
    model (changed in place and returned). A job then costs the same at any stack depth: training
    and every probe evaluation run one LoRA (the new adapter) instead of one per stacked adapter,
    which made job time grow 87 -> 375 s over ten sequential forgets
    (bench/results/unlearn_quality.md). The reference policy is the folded model itself: the same
    `fold_weights` the server serves the stack with."""
    if not stack_arts:
        return model
    deltas = concat_deltas([adapter_deltas(a) for a in stack_arts])
    modules = dict(model.named_modules())
    for path in deltas:
        if not isinstance(modules.get(path), torch.nn.Linear):
            raise UnsupportedAdapter(f"adapter targets {path!r}, which is not a Linear layer of this model")
    for path, w in fold_weights({p: modules[p].weight for p in deltas}, deltas).items():
        # a new Parameter, not an in-place add: a weight tied to another (an LM head tied to the
        # embeddings) gets the delta in this layer only, as the server serves it
        modules[path].weight = torch.nn.Parameter(w, requires_grad=modules[path].weight.requires_grad)
    return model

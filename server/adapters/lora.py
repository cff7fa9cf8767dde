"""Serving-side LoRA: many adapter-stack versions on one base model, chosen per batch row.

The engine trains and verifies with PEFT; serving does not use it, for two measured reasons:
adding an adapter to a PeftModel re-walks and re-wraps the module tree (100-160 ms per adapter
on the 4-layer demo model, bench/swap.py), which would have to happen while decoding is paused,
and every forward with per-row `adapter_names` registers a hook on every LoRA layer.

Here a stack version is what it is mathematically: a fixed sum of deltas. Off the hot path,
`adapter_deltas` reads each verified artifact (PEFT format) and folds its scaling into B, and
`concat_deltas` concatenates the members per target layer — exact, since B_cat·A_cat = Σ sᵢ·Bᵢ·Aᵢ (the same
`cat` combination PEFT offers). Activating a version is then one dict insertion per layer,
between two decode steps. Each target `nn.Linear` gets one forward hook, added the first time
a stack needs it; for every forward the scheduler tells the shared `RowRouter` which version
each batch row runs, and the hook adds that version's delta to those rows only. Rows on the base
model (version key None) are never touched, so they are bit-identical to the plain model.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from safetensors.torch import load_file

from unlearn_engine.artifacts import AdapterArtifact

_PREFIX = "base_model.model."
Delta = tuple[torch.Tensor, torch.Tensor]  # (A [r, in], B [out, r]) with the scaling in B


class UnsupportedAdapter(ValueError):
    """An artifact uses a LoRA feature serving does not implement (DoRA, biases, embeddings...)."""


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


def concat_deltas(members: Sequence[Mapping[str, Delta]], device: torch.device, dtype: torch.dtype) -> dict[str, Delta]:
    """Concatenate member deltas per layer: one (A, B) whose product is the members' sum."""
    paths = sorted({p for m in members for p in m})
    out = {}
    for path in paths:
        parts = [m[path] for m in members if path in m]
        a = torch.cat([p[0] for p in parts], dim=0)
        b = torch.cat([p[1] for p in parts], dim=1)
        out[path] = (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype))
    return out


class RowRouter:
    """Which stack version each row of the current forward runs. Set by the decode thread only."""

    def __init__(self) -> None:
        self.groups: list[tuple[int, torch.Tensor | None]] = []  # (version key, row indices | all)

    @contextmanager
    def rows(self, keys: Sequence[int | None], device: torch.device) -> Iterator[None]:
        distinct = set(keys)
        if distinct == {None}:
            self.groups = []
        elif len(distinct) == 1:
            self.groups = [(keys[0], None)]  # type: ignore[list-item]
        else:
            self.groups = [(k, torch.tensor([i for i, x in enumerate(keys) if x == k], device=device))
                           for k in distinct if k is not None]
        try:
            yield
        finally:
            self.groups = []


class MultiLoRA:
    """The hooks and per-version deltas installed on one base model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.router = RowRouter()
        self._modules = dict(model.named_modules())
        self._deltas: dict[str, dict[int, Delta]] = {}  # module path -> version key -> delta
        self._hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}

    def check(self, deltas: Mapping[str, Delta]) -> None:
        """Raise UnsupportedAdapter unless every path is a Linear layer of matching shape."""
        for path, (a, b) in deltas.items():
            mod = self._modules.get(path)
            if not isinstance(mod, torch.nn.Linear):
                raise UnsupportedAdapter(f"adapter targets {path!r}, which is not a Linear layer of this model")
            if a.shape[1] != mod.in_features or b.shape[0] != mod.out_features:
                raise UnsupportedAdapter(f"adapter shapes for {path!r} do not match the model")

    def install(self, key: int, deltas: Mapping[str, Delta]) -> None:
        """Make version `key` available to rows. Decode thread, between steps; microseconds."""
        for path, delta in deltas.items():
            if path not in self._hooks:
                self._hooks[path] = self._modules[path].register_forward_hook(self._hook(path))
            self._deltas.setdefault(path, {})[key] = delta

    def remove(self, key: int) -> None:
        """Free version `key` (no row uses it any more). Decode thread."""
        for path in list(self._deltas):
            self._deltas[path].pop(key, None)
            if not self._deltas[path]:
                del self._deltas[path]
                self._hooks.pop(path).remove()

    @property
    def versions(self) -> set[int]:
        return {k for per_path in self._deltas.values() for k in per_path}

    def _hook(self, path: str):
        router, table = self.router, self._deltas

        def add_delta(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor):
            if not router.groups:
                return None
            per_version = table.get(path)
            if not per_version:
                return None
            x = inputs[0]
            for key, idx in router.groups:
                delta = per_version.get(key)
                if delta is None:
                    continue
                a, b = delta
                if idx is None:
                    out += (x @ a.t()) @ b.t()
                else:
                    out[idx] += (x[idx] @ a.t()) @ b.t()
            return out

        return add_delta

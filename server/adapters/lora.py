"""Serving-side LoRA: many adapter-stack versions on one base model, each folded into weights.

The engine trains and verifies with PEFT; serving does not use it, for two measured reasons:
adding an adapter to a PeftModel re-walks and re-wraps the module tree (100-160 ms per adapter
on the 4-layer demo model, bench/swap.py), which would have to happen while decoding is paused,
and every forward with per-row `adapter_names` registers a hook on every LoRA layer.

Here a stack version is what it is mathematically: the base weights plus a fixed sum of deltas
(unlearn_engine/folding.py, the same arithmetic the engine trains on). Off the hot path,
`FoldedStacks.fold` builds a version's folded weights as new tensors (W + B_cat·A_cat per target
Linear); installing a version is one dict insertion, between two decode steps. For every forward
the scheduler tells the `RowRouter` which version each batch row runs; the version most rows run
is *served*: its tensors are put in the Linear layers by reference (a dict assignment per layer,
only when it changes), so at steady state a step costs what the plain model costs, with no hook
at all (8 stacked rank-8 adapters cost +28-32 % CPU per token as unfolded LoRA hooks,
bench/results/serving.md). Rows on any other version (admitted before a swap, or on the bare
base model) are recomputed by a forward hook with their own version's weights, `F.linear(x[rows],
W_v, bias)` — the very call an `nn.Linear` makes — so each row sees the same arithmetic whichever
version is served, before and after a swap; base rows use the original base tensors. The hooks
exist only while a batch mixes versions. Memory: the base tensors of every target layer are kept
(new versions fold from them), plus one folded copy per live version.
"""

from __future__ import annotations

import collections
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from unlearn_engine.folding import Delta, UnsupportedAdapter, adapter_deltas, concat_deltas, fold_weights

__all__ = ["Delta", "FoldedStacks", "RowRouter", "UnsupportedAdapter", "Weights", "adapter_deltas", "concat_deltas"]

Weights = dict[str, torch.Tensor]  # module path -> weight tensor of one version


class RowRouter:
    """Which stack version each row of the current forward runs. Used by the decode thread only."""

    def __init__(self, stacks: FoldedStacks) -> None:
        self._stacks = stacks
        self.groups: list[tuple[int | None, torch.Tensor]] = []  # (version, its rows) off the served version

    @contextmanager
    def rows(self, keys: Sequence[int | None], device: torch.device) -> Iterator[None]:
        counts = collections.Counter(keys)
        served = self._stacks.served
        top = max(counts.values(), default=0)
        if counts.get(served, 0) < top:  # serve what most rows run; keep the served one on a tie
            served = next(k for k in keys if counts[k] == top)
            self._stacks.serve(served)
        if len(counts) > 1:
            self.groups = [(k, torch.tensor([i for i, x in enumerate(keys) if x == k], device=device))
                           for k in counts if k != served]
            self._stacks.hooks_on()
        else:
            self.groups = []
            self._stacks.hooks_off()
        try:
            yield
        finally:
            self.groups = []


class FoldedStacks:
    """The folded weights of every live stack version on one base model, and the row hooks."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._modules = {p: m for p, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        self._base: Weights = {p: m.weight for p, m in self._modules.items()}  # references, no copy
        self._versions: dict[int, Weights] = {}  # version key -> its folded weights
        self._hooks: dict[str, torch.utils.hooks.RemovableHandle] = {}
        self.served: int | None = None  # the version whose weights are in the layers; None = base
        self.router = RowRouter(self)

    def check(self, deltas: Mapping[str, Delta]) -> None:
        """Raise UnsupportedAdapter unless every path is a Linear layer of matching shape."""
        for path, (a, b) in deltas.items():
            mod = self._modules.get(path)
            if mod is None:
                raise UnsupportedAdapter(f"adapter targets {path!r}, which is not a Linear layer of this model")
            if a.shape[1] != mod.in_features or b.shape[0] != mod.out_features:
                raise UnsupportedAdapter(f"adapter shapes for {path!r} do not match the model")

    def fold(self, deltas: Mapping[str, Delta]) -> Weights:
        """A version's weights: base + deltas, as new tensors. Blocking, any thread: it reads only
        the base tensors, which nothing modifies."""
        self.check(deltas)
        return {p: torch.nn.Parameter(w, requires_grad=False) for p, w in fold_weights(self._base, deltas).items()}

    def install(self, key: int, weights: Weights) -> None:
        """Make version `key` available to rows. Decode thread, between steps; microseconds."""
        served = self.served
        if key == served:  # replacing the served version: its old tensors leave the layers first
            self.serve(None)
        self._versions[key] = dict(weights)
        if key == served:
            self.serve(key)

    def remove(self, key: int) -> None:
        """Free version `key` (no row uses it any more). Decode thread."""
        if key == self.served:
            self.serve(None)
        self._versions.pop(key, None)
        if not self._versions:
            self.hooks_off()

    @property
    def versions(self) -> set[int]:
        return set(self._versions)

    def weight(self, key: int | None, path: str) -> torch.Tensor:
        """The weight version `key` runs in layer `path` (an unknown key runs the base model)."""
        own = self._versions.get(key) if key is not None else None
        return own[path] if own is not None and path in own else self._base[path]

    def serve(self, key: int | None) -> None:
        """Put version `key`'s weights in the layers, by reference. Decode thread."""
        for path in {*self._versions.get(self.served, ()), *self._versions.get(key, ())}:  # type: ignore[arg-type]
            self._modules[path]._parameters["weight"] = self.weight(key, path)
        self.served = key

    def hooks_on(self) -> None:
        """A recomputing hook on every layer some live version changes (idempotent)."""
        for path in {p for weights in self._versions.values() for p in weights}:
            if path not in self._hooks:
                self._hooks[path] = self._modules[path].register_forward_hook(self._hook(path))

    def hooks_off(self) -> None:
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()

    def _hook(self, path: str):
        router, module = self.router, self._modules[path]

        def recompute(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor):
            served = module.weight
            for key, idx in router.groups:
                w = self.weight(key, path)
                if w is not served:  # the same call nn.Linear makes, on this version's rows only
                    out[idx] = F.linear(inputs[0][idx], w, module.bias)
            return out

        return recompute

"""AdapterStackManager: builds and activates versions of the forget-adapter stack.

A `ServingStack` is immutable: a version number, the adapter ids in application order, and the
key under which its weights are installed (see lora.py: the base weights plus the sum of the
members' LoRA deltas, folded as new tensors). Activation:
1. off the hot path (a worker thread): verify every new artifact (checksums, base fingerprint),
   read its deltas and fold the version's weights on the model's device;
2. between two decode steps: install them (one dict insertion) and make the version current.
   Rows already decoding keep their old version until they finish;
3. when the last row of an old version finishes, the scheduler releases it (its folded weights
   are dropped; member deltas that no live version needs are dropped).
A refused artifact raises `StackRefused` before anything in the model changed.
Does not decide when to swap or touch the ledger (coordinator.py does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from server.adapters.lora import Delta, FoldedStacks, UnsupportedAdapter, Weights, adapter_deltas, concat_deltas
from server.runtime.scheduler import BatchScheduler
from unlearn_engine.artifacts import ArtifactError, load_artifact

logger = logging.getLogger(__name__)


class StackRefused(Exception):
    """An artifact failed verification; the old stack keeps serving."""


@dataclass(frozen=True)
class ServingStack:
    version: int
    adapter_ids: tuple[str, ...]
    lora_key: int | None  # key of its installed deltas; None = the bare base model
    on_release: Callable[[ServingStack], None] | None = field(default=None, compare=False, repr=False)

    @property
    def depth(self) -> int:
        return len(self.adapter_ids)

    def release(self) -> None:  # called on the decode thread once no row uses this version
        if self.on_release is not None:
            self.on_release(self)


@dataclass(frozen=True)
class SwapTiming:
    prepare_s: float  # verification and delta building off the hot path
    pause_s: float  # decode loop paused while the new version was installed


@dataclass(frozen=True)
class _Prepared:
    members: dict[str, dict[str, Delta]]  # adapter id -> its deltas (CPU, float32)
    folded: Weights  # module path -> the version's weights (base + deltas), on the model's device


class AdapterStackManager:
    def __init__(self, scheduler: BatchScheduler, fingerprint: str):
        self.scheduler = scheduler
        self.fingerprint = fingerprint
        self.lora = FoldedStacks(scheduler.loaded.model)
        scheduler.router = self.lora.router
        self._live: dict[int, ServingStack] = {}  # versions that may still have rows
        self._members: dict[str, dict[str, Delta]] = {}  # deltas of adapters live versions use

    @property
    def current(self) -> ServingStack:
        stack = self.scheduler.stack
        return stack if isinstance(stack, ServingStack) else ServingStack(stack.version, (), None)

    def verify(self, paths: dict[str, Path]) -> dict[str, dict[str, Delta]]:
        """adapter id -> its deltas, from verified artifacts; raises StackRefused. Blocking."""
        out = {}
        for adapter_id, path in paths.items():
            try:
                deltas = adapter_deltas(load_artifact(path, self.fingerprint))
                self.lora.check(deltas)
            except (ArtifactError, UnsupportedAdapter, OSError, KeyError, ValueError) as exc:
                raise StackRefused(f"adapter {adapter_id} refused: {exc}") from exc
            out[adapter_id] = deltas
        return out

    def prepare(self, adapter_ids: tuple[str, ...], paths: dict[str, Path]) -> _Prepared:
        """Everything but the switch, off the decode thread: verify new members, fold the version."""
        known = dict(self._members)  # a snapshot: the decode thread may drop members meanwhile
        members = {a: known[a] for a in adapter_ids if a in known}
        members.update(self.verify({a: paths[a] for a in adapter_ids if a not in known}))
        folded = self.lora.fold(concat_deltas([members[a] for a in adapter_ids])) if adapter_ids else {}
        return _Prepared(members, folded)

    async def activate(self, version: int, adapter_ids: tuple[str, ...], paths: dict[str, Path]) -> SwapTiming:
        """Verify and build, then switch new requests to `version` (adapters in `adapter_ids` order)."""
        start = time.monotonic()
        prepared = await asyncio.to_thread(self.prepare, adapter_ids, paths)
        ready = time.monotonic()
        pause = await asyncio.wrap_future(self.scheduler.call_between_steps(
            lambda: self._switch(version, adapter_ids, prepared)))
        return SwapTiming(ready - start, pause)

    def _switch(self, version: int, adapter_ids: tuple[str, ...], prepared: _Prepared) -> float:
        """Decode thread, between steps. Returns how long the loop was paused."""
        t0 = time.perf_counter()
        self._members.update(prepared.members)
        key = version if adapter_ids else None
        if key is not None:
            self.lora.install(key, prepared.folded)
        stack = ServingStack(version, adapter_ids, key, on_release=self._release)
        self._live[version] = stack
        self.scheduler.set_stack(stack)
        return time.perf_counter() - t0

    def _release(self, stack: ServingStack) -> None:
        """Decode thread: free an old version's deltas and members no live version needs."""
        self._live.pop(stack.version, None)
        if stack.lora_key is not None:
            self.lora.remove(stack.lora_key)
        in_use = {a for s in (*self._live.values(), self.current) for a in s.adapter_ids}
        for adapter_id in [a for a in self._members if a not in in_use]:
            del self._members[adapter_id]
        logger.info("released adapter stack v%d", stack.version)

"""AdapterStackManager: builds and activates versions of the forget-adapter stack.

A `ServingStack` is immutable: a version number, the adapter ids in application order, and the
one combined PEFT adapter (`cat` of its members = the sum of their deltas) that decode steps
run for rows bound to it. Activation:
1. off the hot path (a worker thread): verify every artifact (checksums, base fingerprint);
2. between two decode steps: load new adapters into the model, add the combined adapter,
   make it current. Rows already decoding keep their old version until they finish;
3. when the last row of an old version finishes, the scheduler releases it (its combined
   adapter is deleted; member adapters no live version uses are unloaded).
A refused artifact raises `StackRefused` before anything in the model changed.
Does not decide when to swap or touch the ledger (forgetting/coordinator.py does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from server.runtime.scheduler import BatchScheduler
from unlearn_engine import stacking
from unlearn_engine.artifacts import AdapterArtifact, ArtifactError, load_artifact

logger = logging.getLogger(__name__)


class StackRefused(Exception):
    """An artifact failed verification; the old stack keeps serving."""


@dataclass(frozen=True)
class ServingStack:
    version: int
    adapter_ids: tuple[str, ...]
    adapter_name: str | None  # combined PEFT adapter; None = the bare base model
    on_release: Callable[[ServingStack], None] | None = field(default=None, compare=False, repr=False)

    @property
    def depth(self) -> int:
        return len(self.adapter_ids)

    def release(self) -> None:  # called on the decode thread once no row uses this version
        if self.on_release is not None:
            self.on_release(self)


@dataclass(frozen=True)
class SwapTiming:
    prepare_s: float  # verification off the hot path
    pause_s: float  # decode loop paused while the model was changed


class AdapterStackManager:
    def __init__(self, scheduler: BatchScheduler, fingerprint: str):
        self.scheduler = scheduler
        self.fingerprint = fingerprint
        self._live: dict[int, ServingStack] = {}  # versions that may still have rows
        self._members: dict[str, str] = {}  # adapter id -> PEFT adapter name, loaded in the model

    @property
    def current(self) -> ServingStack:
        stack = self.scheduler.stack
        return stack if isinstance(stack, ServingStack) else ServingStack(stack.version, (), None)

    def verify(self, paths: dict[str, Path]) -> dict[str, AdapterArtifact]:
        """adapter id -> verified artifact; raises StackRefused. Blocking: run in a thread."""
        artifacts = {}
        for adapter_id, path in paths.items():
            try:
                artifacts[adapter_id] = load_artifact(path, self.fingerprint)
            except ArtifactError as exc:
                raise StackRefused(f"adapter {adapter_id} refused: {exc}") from exc
        return artifacts

    async def activate(self, version: int, adapter_ids: tuple[str, ...], paths: dict[str, Path]) -> SwapTiming:
        """Verify, then switch new requests to `version` (adapters in `adapter_ids` order)."""
        start = time.monotonic()
        # Members of the current stack are loaded and cannot be released (only retired versions
        # are), so only adapters new to the stack need verifying. Callers serialise activations.
        live = set(self.current.adapter_ids)
        artifacts = await asyncio.to_thread(self.verify, {a: paths[a] for a in adapter_ids if a not in live})
        prepared = time.monotonic()
        pause = await asyncio.wrap_future(self.scheduler.call_between_steps(
            lambda: self._switch(version, adapter_ids, artifacts)))
        return SwapTiming(prepared - start, pause)

    def _switch(self, version: int, adapter_ids: tuple[str, ...], artifacts: dict[str, AdapterArtifact]) -> float:
        """Decode thread, between steps. Returns how long the loop was paused."""
        t0 = time.perf_counter()
        new = [a for a in adapter_ids if a not in self._members]
        missing = [a for a in new if a not in artifacts]
        if missing:
            raise StackRefused(f"adapters {missing} are neither loaded nor verified")
        if new:
            self.scheduler.model = stacking.load_adapters(self.scheduler.model, [artifacts[a] for a in new])
            for adapter_id in new:
                self._members[adapter_id] = artifacts[adapter_id].adapter_name
        combined = None
        if adapter_ids:
            combined = f"stack_v{version}"
            stacking.add_combined_adapter(self.scheduler.model, [self._members[a] for a in adapter_ids], combined)
        stack = ServingStack(version, adapter_ids, combined, on_release=self._release)
        self._live[version] = stack
        self.scheduler.set_stack(stack)
        return time.perf_counter() - t0

    def _release(self, stack: ServingStack) -> None:
        """Decode thread: free an old version's combined adapter and members nobody needs."""
        self._live.pop(stack.version, None)
        model = self.scheduler.model
        if stack.adapter_name is not None:
            stacking.remove_adapter(model, stack.adapter_name)
        in_use = {a for s in (*self._live.values(), self.current) for a in s.adapter_ids}
        for adapter_id in [a for a in self._members if a not in in_use]:
            stacking.remove_adapter(model, self._members.pop(adapter_id))
        if not model.peft_config:
            # Nothing left: take the LoRA layers out so the base runs exactly as before any forget
            # (PEFT would otherwise still point its active adapter at a deleted one).
            self.scheduler.model = model.unload()
        elif model.active_adapter not in model.peft_config:
            model.set_adapter(next(iter(model.peft_config)))
        logger.info("released adapter stack v%d", stack.version)

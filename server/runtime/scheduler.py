"""Step-level continuous batching on one dedicated thread.

Requests wait in a bounded queue; between decode steps the thread admits as many as there are
free slots (one batched prefill), decodes one token for every running row per step, and drops a
row the moment it finishes, is cancelled or passes its deadline, freeing its slot. All torch work
happens here, so the asyncio loop only moves events. Work that must happen *between* steps
(adapter-stack swaps) is queued with `call_between_steps`.

Every row is bound to the adapter stack that was current when it was admitted and finishes on it:
its KV cache was computed under that stack, and reusing it under another would mix two models.
Rows on different stacks share a batch: before each forward the scheduler tells the router
(server/adapters/lora.py) which stack version each row runs.

We use our own scheduler rather than transformers' continuous-batching API because ours has to
mix adapter stacks per row and hand the guard every token as it is produced.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
from transformers import DynamicCache

from server.runtime import kv_batch
from server.runtime.kv_batch import KVBatch
from server.runtime.model import LoadedModel
from server.runtime.params import SamplingParams
from server.runtime.sampling import choose_tokens, make_generator
from server.runtime.text import IncrementalText

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The waiting queue is at its bound; the caller should answer RESOURCE_EXHAUSTED."""


class SchedulerStopped(Exception):
    """The scheduler is draining or stopped and takes no new work."""


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # time.monotonic() after which the row is dropped
    ignore_eos: bool = False  # fixed-length generation for benchmarks
    internal: bool = False  # the server's own traffic (leakage monitor): kept out of client latency metrics
    stream_interval: int = 0  # tokens per text event; 0 = the scheduler's default


@dataclass(frozen=True)
class TextEvent:
    text: str  # newly released text (may be empty when only the token count moved)
    completion_tokens: int
    stack_version: int


@dataclass(frozen=True)
class FinishEvent:
    reason: str  # "length" | "stop" | "cancelled" | "error"
    text: str  # text released together with the finish
    prompt_tokens: int
    completion_tokens: int
    stack_version: int


Event = TextEvent | FinishEvent


class StackHandle(Protocol):
    """What the scheduler needs of an adapter stack (see server/adapters)."""

    version: int
    lora_key: int | None  # the router key of its deltas, None for the bare base model

    def release(self) -> None: ...


@dataclass(frozen=True)
class BaseStack:
    """Stack version 0: the base model with no forget adapters."""

    version: int = 0
    lora_key: int | None = None

    def release(self) -> None:
        return None


class RowRouting(Protocol):
    """Tells per-layer adapter hooks which version each batch row runs (adapters/lora.py)."""

    def rows(self, keys: list[int | None], device: torch.device) -> contextlib.AbstractContextManager: ...


class SchedulerObserver(Protocol):
    def queue_wait(self, seconds: float) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def tokens(self, count: int) -> None: ...
    def occupancy(self, running: int, waiting: int) -> None: ...


class Handle:
    """The async side of one request: an event queue fed by the decode thread."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]):
        self.request = request
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._wake = wake
        self.cancelled = False
        self.submitted_at = time.monotonic()

    def cancel(self) -> None:
        """Stop generating for this request; its slot frees at the next step."""
        self.cancelled = True
        self._wake()

    async def events(self):
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, FinishEvent):
                return


def _put_all(items: list[tuple[Handle, Event]]) -> None:  # on the event loop
    for handle, event in items:
        handle._queue.put_nowait(event)


def deliver(loop: asyncio.AbstractEventLoop, items: list[tuple[Handle, Event]]) -> None:
    """Hand events to handles on `loop` with one cross-thread wake: a wake costs ~50-75 us of CPU,
    a further event in it a few us (bench/loop_wake.py), so one per step, not one per token."""
    try:
        loop.call_soon_threadsafe(_put_all, items)
    except RuntimeError:  # the loop is closed: nobody is listening any more
        pass


class _Outbox:
    """The events of one decode step, delivered together after it: one wake per event loop."""

    def __init__(self) -> None:
        self._items: list[tuple[Handle, Event]] = []

    def put(self, handle: Handle, event: Event) -> None:
        self._items.append((handle, event))

    def flush(self) -> None:
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Handle, Event]]] = {}
        for handle, event in items:
            by_loop.setdefault(handle._loop, []).append((handle, event))
        for loop, batch in by_loop.items():
            deliver(loop, batch)


@dataclass
class _Row:
    handle: Handle
    stack: StackHandle
    text: IncrementalText
    generator: torch.Generator | None
    started: float = field(default_factory=time.monotonic)
    produced: int = 0
    last_token: int = 0
    unsent: str = ""  # released text waiting for the row's next stream interval
    sent_at: int = 0  # `produced` when the row's last text event went out (0: none yet)


class BatchScheduler:
    def __init__(self, loaded: LoadedModel, max_batch: int = 8, max_waiting: int = 64,
                 observer: SchedulerObserver | None = None, stream_interval: int = 1):
        self.loaded = loaded
        self.stream_interval = stream_interval  # tokens per text event unless a request sets its own
        self.router: RowRouting | None = None  # set once an adapter stack manager exists
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.observer = observer
        self._cond = threading.Condition()
        self._waiting: collections.deque[Handle] = collections.deque()
        self._between: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future]] = collections.deque()
        self._rows: list[_Row] = []
        self._batch: KVBatch | None = None
        self._stack: StackHandle = BaseStack()
        self._stack_users: dict[int, int] = {}  # stack version -> rows using it
        self._retired: dict[int, StackHandle] = {}
        self._accepting = True
        self._stopping = False
        self._outbox = _Outbox()
        self._thread = threading.Thread(target=self._run, name="lethe-decode", daemon=True)

    # ---- async-side API -------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def stack(self) -> StackHandle:
        return self._stack

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> Handle:
        handle = Handle(request, loop, self._notify)
        with self._cond:
            if not self._accepting:
                raise SchedulerStopped()
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull()
            self._waiting.append(handle)
            self._cond.notify()
        return handle

    def call_between_steps(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run fn on the decode thread between two steps; the future carries its result."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            self._between.append((fn, fut))
            self._cond.notify()
        return fut

    def set_stack(self, stack: StackHandle) -> None:
        """Make `stack` current for newly admitted rows. Call between steps."""
        old, self._stack = self._stack, stack
        if old.version != stack.version:
            self._retired[old.version] = old
            self._release_unused()

    def counts(self) -> tuple[int, int]:
        with self._cond:
            return len(self._rows), len(self._waiting)

    def stop_accepting(self) -> None:
        with self._cond:
            self._accepting = False

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify()

    # ---- decode thread -------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():  # no autograd bookkeeping or version counters on any tensor
            self._loop()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._waiting or self._rows or self._between):
                    self._cond.wait()
                if self._stopping:
                    break
                between = list(self._between)
                self._between.clear()
                admitted = self._take_admissions()
            for fn, fut in between:
                self._call(fn, fut)
            try:
                if admitted:
                    self._prefill(admitted)
                elif self._rows:
                    self._decode_step()
            except Exception:  # a failed step must not kill the thread or leak rows
                logger.exception("decode step failed; finishing %d rows with error", len(self._rows))
                for row in self._rows:
                    self._finish(row, "error")
                self._rows, self._batch = [], None
            self._outbox.flush()
            self._report()
        for row in self._rows:
            self._finish(row, "cancelled")
        for handle in self._waiting:
            self._outbox.put(handle, FinishEvent("cancelled", "", len(handle.request.prompt_ids), 0,
                                                 self._stack.version))
        self._outbox.flush()
        for fn, fut in self._between:
            fut.cancel()

    @staticmethod
    def _call(fn: Callable[[], Any], fut: concurrent.futures.Future) -> None:
        try:
            fut.set_result(fn())
        except Exception as exc:  # delivered to whoever waits on the future
            fut.set_exception(exc)

    def _take_admissions(self) -> list[Handle]:
        free = self.max_batch - len(self._rows)
        admitted: list[Handle] = []
        while self._waiting and len(admitted) < free:
            handle = self._waiting.popleft()
            if handle.cancelled or self._expired(handle):
                self._outbox.put(handle, FinishEvent("cancelled", "", len(handle.request.prompt_ids), 0, self._stack.version))
                continue
            admitted.append(handle)
        return admitted

    @staticmethod
    def _expired(handle: Handle) -> bool:
        d = handle.request.deadline
        return d is not None and time.monotonic() > d

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: Any, rows: list[_Row]) -> tuple[torch.Tensor, Any]:
        """One forward pass -> (last-position logits [B, V], the updated cache)."""
        routing = (self.router.rows([row.stack.lora_key for row in rows], ids.device)
                   if self.router is not None else contextlib.nullcontext())
        with routing:
            out = self.loaded.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,  # left-padded: the model appends ids.shape[1] columns to it
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1, :], out.cache

    def _prefill(self, handles: list[Handle]) -> None:
        dev = self.loaded.device
        now = time.monotonic()
        rows = []
        for h in handles:
            self._stack_users[self._stack.version] = self._stack_users.get(self._stack.version, 0) + 1
            rows.append(_Row(h, self._stack, IncrementalText(self.loaded.tokenizer, h.request.stop),
                             make_generator(h.request.sampling, dev)))
            if self.observer and not h.request.internal:
                self.observer.queue_wait(now - h.submitted_at)
        ids, mask = kv_batch.left_pad_prompts([list(h.request.prompt_ids) for h in handles], self.loaded.pad_id, dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(ids, mask, positions, DynamicCache(), rows)
        new = KVBatch(cache, mask, mask.sum(-1))
        self._batch = kv_batch.merge(self._batch, new)
        self._rows.extend(rows)
        self._advance(rows, logits, offset=len(self._rows) - len(rows))

    def _decode_step(self) -> None:
        batch = self._batch
        assert batch is not None  # rows exist only with a batch
        ids = torch.tensor([[row.last_token] for row in self._rows], device=self.loaded.device)
        mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)
        logits, cache = self._forward(ids, mask, batch.positions[:, None], batch.cache, self._rows)
        self._batch = KVBatch(cache, mask, batch.positions + 1)
        self._advance(self._rows, logits, offset=0)

    def _advance(self, rows: list[_Row], logits: torch.Tensor, offset: int) -> None:
        """Sample one token per row, emit text, and drop finished rows from the batch."""
        tokens = choose_tokens(logits, [r.handle.request.sampling for r in rows], [r.generator for r in rows])
        done: set[int] = set()
        for i, (row, token) in enumerate(zip(rows, tokens)):
            reason, delta = self._step_row(row, token)
            if reason:
                self._finish(row, reason, row.unsent + delta)
                done.add(offset + i)
                continue
            row.unsent += delta
            interval = row.handle.request.stream_interval or self.stream_interval
            # the first text goes out at once (time to first token), then at most one event per interval
            if row.unsent and (row.sent_at == 0 or row.produced - row.sent_at >= interval):
                self._outbox.put(row.handle, TextEvent(row.unsent, row.produced, row.stack.version))
                row.unsent, row.sent_at = "", row.produced
        if self.observer:
            self.observer.tokens(sum(not r.handle.request.internal for r in rows))
        if done:
            keep = [i for i in range(len(self._rows)) if i not in done]
            self._rows = [self._rows[i] for i in keep]
            assert self._batch is not None  # rows exist only with a batch
            self._batch = kv_batch.select(self._batch, keep)

    def _step_row(self, row: _Row, token: int) -> tuple[str, str]:
        """Record one token; return (finish reason or "", newly released text)."""
        row.produced += 1
        row.last_token = token
        if row.produced == 1 and self.observer and not row.handle.request.internal:
            self.observer.first_token(time.monotonic() - row.handle.submitted_at)
        if row.handle.cancelled or self._expired(row.handle):
            return "cancelled", ""
        if token in self.loaded.eos_ids and not row.handle.request.ignore_eos:
            return "stop", ""
        delta = row.text.add(token)
        if row.text.stopped:
            return "stop", delta
        if row.produced >= row.handle.request.max_new_tokens:
            return "length", delta
        return "", delta

    def _finish(self, row: _Row, reason: str, pending: str = "") -> None:
        tail = pending + (row.text.finish() if reason in ("length", "stop") else "")
        req = row.handle.request
        self._outbox.put(row.handle, FinishEvent(reason, tail, len(req.prompt_ids), row.produced, row.stack.version))
        v = row.stack.version
        self._stack_users[v] -= 1
        self._release_unused()

    def _release_unused(self) -> None:
        for version in [v for v in self._retired if self._stack_users.get(v, 0) == 0]:
            stack = self._retired.pop(version)
            self._stack_users.pop(version, None)
            try:
                stack.release()
            except Exception:
                logger.exception("releasing adapter stack v%d failed", version)

    def _report(self) -> None:
        if self.observer:
            running, waiting = self.counts()
            self.observer.occupancy(running, waiting)

"""ForgetCoordinator: the server side of the forget flow.

- `submit`: validated request -> resolved against the corpus (off the loop; a too-broad or
  empty subject, or a request over the cap, is refused here, before anything is stored or
  armed) -> lexical guard entries derived from the request *and its corpus matches* and armed
  under a provisional id -> durable ledger row, the entries moved to its id -> the resolution
  recorded with them, ledger FILTERING -> reply. The guard blocks the content, every corpus
  entry about a subject included, before the request touches the disk.
- `dry_run`: the same resolution, nothing stored.
- `restore`: on start, rebuild the guard from the ledger's hashed entries (plaintext only for
  jobs that crashed before arming), re-queue jobs whose worker died.
- `run`: a background loop that swaps verified adapters into the serving stack (the ledger's
  version is committed only after the model switched; a crash in between re-applies on start,
  never twice), refuses corrupt ones, and refreshes job / worker gauges.
- `deactivate`: removes an adapter as a new stack version; the guard keeps blocking; the
  forget's deletion receipt gets a signed revocation.
- `receipt`: the signed deletion receipt of an ACTIVE job (signed at the swap, or now if a crash
  came between), see receipts.py.
Training itself happens in the worker process (forget/worker.py); this module only watches the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from server.adapters.stack import AdapterStackManager, StackRefused, SwapTiming
from server.crash import crash_point
from server.errors import FailedPrecondition, InvalidArgument, NotFound
from server.forget.hits import PROVISIONAL_PREFIX
from server.forget.issuer import ReceiptIssuer
from server.forget.receipts import ReceiptSigner, SignedReceipt, commitment, new_commitment_key
from server.forget.layout import DataDir
from server.forget.jobs import ForgetJob, ForgetPayload, ForgetResolution, ForgetState, MatchCounts, StackRecord
from server.forget.shared_store import SharedStoreError, local_paths
from server.forget.resolution import CorpusResolver, CorpusUnavailable, Resolved, guard_items
from server.guard import GuardEntries, LeakageGuard
from server.forget.ledger import ForgetLedger, LedgerError, LedgerUnavailable
from server.metrics import ServerMetrics

logger = logging.getLogger(__name__)

BEFORE, AFTER = "before_adapter", "after_adapter"
# Engine metrics exported per finished job (a fixed set: bounded label values).
VERIFICATION_SCORES = ("forget.fact_span_accuracy", "retain.fact_span_accuracy", "forget.verbatim_rate",
                       "forget.truth_ratio", "mia.loss_auc", "mia.min_k_auc", "mia.zlib_auc", "model_utility")


@dataclass(frozen=True)
class Submitted:
    job: ForgetJob
    created: bool
    # The request commitment's HMAC key, for the operator only: returned once (b"" on a retry),
    # never stored. With it and the request, anyone can check the receipt covers that request.
    commitment_key: bytes = b""


class ForgetCoordinator:
    def __init__(self, ledger: ForgetLedger, guard: LeakageGuard, data: DataDir, metrics: ServerMetrics,
                 default_method: str, poll_seconds: float = 0.2, orphan_after_seconds: float = 60.0,
                 crash_at: tuple[str, ...] = (), ack_all_stages: bool = False,
                 resolver: CorpusResolver | None = None, signer: ReceiptSigner | None = None):
        self.ledger = ledger
        self.signer = signer  # None: no receipts (tests of other parts)
        self._receipts = ReceiptIssuer(ledger, signer, self._entry_counts) if signer is not None else None
        self.resolver = resolver or CorpusResolver()
        self.guard = guard
        self.data = data
        self.metrics = metrics
        self.default_method = default_method
        self.poll_seconds = poll_seconds
        self.orphan_after_seconds = orphan_after_seconds
        self.crash_at = crash_at
        self.ack_all_stages = ack_all_stages
        self.stacks: AdapterStackManager | None = None  # set once the model is loaded
        self._swap_lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()
        self._embedding = ThreadPoolExecutor(1, thread_name_prefix="lethe-guard-embed")  # see _add_semantic
        self._failed_seen: set[str] | None = None  # FAILED jobs already counted (None until first tick)
        self._changed = asyncio.Event()  # wakes watchers when the loop sees ledger changes
        self.on_stack_change: Callable[[], None] | None = None  # e.g. the leakage monitor's poke
        # (provisional forget id, the job's id or None): guard hits counted under the first
        # belong to the second (HitTally.rename)
        self.on_renamed: Callable[[str, str | None], None] | None = None

    # ---- Forget ----------------------------------------------------------------------------
    async def submit(self, payload: ForgetPayload, method: str, reason: str, key: str | None,
                     actor: str, admit: Callable[[], None] | None = None) -> Submitted:
        """`admit` (blocking; raises to refuse, e.g. a full queue) runs first, on the same thread."""
        start = time.monotonic()
        commitment_key = new_commitment_key()
        try:
            job, created, resolved, entries = await asyncio.to_thread(
                self._write, payload, method or self.default_method, reason, key, actor, admit, start,
                commitment(commitment_key, payload))
        except CorpusUnavailable as exc:
            raise FailedPrecondition(str(exc)) from None
        self.metrics.forget_requests.labels("created" if created else "duplicate").inc()
        if not created:
            return Submitted(job, False)
        job = await self._arm(job.forget_id, payload, resolved, entries)
        return Submitted(job, True, commitment_key)

    def _write(self, payload: ForgetPayload, method: str, reason: str, key: str | None, actor: str,
               admit: Callable[[], None] | None, start: float,
               request_commitment: str) -> tuple[ForgetJob, bool, Resolved, GuardEntries | None]:
        """Blocking, one thread hop up to the block: admit, resolve (refuse before storing or
        arming anything), derive the lexical entries and arm them under a provisional id, then
        write the request durably and move the entries to the id the ledger gave it.

        Arming before the durable write keeps the disk's fsync (p99 17 ms on a busy host, the
        largest part of the time to block; bench/guard.py) out of the time to block. A write that
        fails disarms, and no reply went out, so the client knows the Forget was not taken. Each
        thread hop before the block used to cost up to a scheduler time slice as well: one is left.
        Returns the live lexical entries (None when ack_all_stages: `_arm` derives them all)."""
        if admit is not None:
            admit()
        resolved = self._resolve(payload)
        if resolved.problems:  # nothing stored, nothing armed
            for code in resolved.codes:
                self.metrics.forget_refused.labels(code).inc()
            raise InvalidArgument("; ".join(resolved.problems))
        provisional = PROVISIONAL_PREFIX + uuid.uuid4().hex
        lexical = self.guard.derive(provisional, guard_items(payload, resolved.entries), semantic=False)
        self.guard.add(lexical, BEFORE)
        to_block = time.monotonic() - start
        job: ForgetJob | None = None
        created = False
        try:
            digest = self.guard.content_digest(payload.to_json().encode())  # keyed: see GuardKeys
            job, created = self.ledger.submit(payload, method, reason, key, actor, digest, request_commitment)
            if created:  # lexical records carry no forget id: the same ones, under the job's id
                lexical = dataclasses.replace(lexical, forget_id=job.forget_id)
                self.guard.add(lexical, BEFORE)
                # Observed for new forgets only: a retry's content was blocked by its first request.
                self.metrics.forget_to_block.observe(to_block)
        finally:  # the job's entries are live before the provisional ones go: no gap
            self.guard.remove(provisional)
            if self.on_renamed is not None:  # hits counted meanwhile: to the job (a duplicate's too)
                self.on_renamed(provisional, job.forget_id if job is not None else None)
        return job, created, resolved, (lexical if created and not self.ack_all_stages else None)

    def _resolve(self, payload: ForgetPayload) -> Resolved:
        start = time.monotonic()
        resolved = self.resolver.resolve(payload)
        self.metrics.forget_resolve.observe(time.monotonic() - start)
        return resolved

    async def dry_run(self, payload: ForgetPayload) -> Resolved:
        """What `payload` resolves to in the corpus (off the event loop); stores nothing."""
        try:
            return await asyncio.to_thread(self._resolve, payload)
        except CorpusUnavailable as exc:
            raise FailedPrecondition(str(exc)) from None

    async def _arm(self, forget_id: str, payload: ForgetPayload, resolved: Resolved | None = None,
                   entries: GuardEntries | None = None) -> ForgetJob:
        # By default the lexical entries (milliseconds) block before the reply (`_write` armed
        # them) and sentence embeddings (100+ ms) follow in the background, replacing them (add()
        # swaps without a gap); with ack_all_stages the reply waits for the embeddings too. The
        # entries cover the request and every corpus entry it resolved to; the ledger records
        # which, in the same transaction that moves the job to FILTERING.
        if resolved is None:  # restore: a crash came between the durable write and arming
            resolved = await self._restore_resolution(payload)
        semantic = self.ack_all_stages
        if entries is None:  # restore, or every stage before the reply
            entries = await asyncio.to_thread(self.guard.derive, forget_id, guard_items(payload, resolved.entries),
                                              semantic)
            self.guard.add(entries, BEFORE)
        job = await asyncio.to_thread(self.ledger.arm, forget_id, entries.to_bytes(), resolved.resolution)
        if not semantic:
            self._spawn(self._add_semantic(forget_id, payload, resolved.resolution))
        return job

    async def _restore_resolution(self, payload: ForgetPayload) -> Resolved:
        try:
            return await asyncio.to_thread(self.resolver.resolve, payload)
        except CorpusUnavailable:
            logger.warning("corpus unavailable while re-arming a forget; arming its own items only")
            counts = MatchCounts((0,) * len(payload.texts), (0,) * len(payload.qa_pairs), (0,) * len(payload.subjects))
            return Resolved(ForgetResolution(counts), (), (), ())

    async def _add_semantic(self, forget_id: str, payload: ForgetPayload,
                            resolution: ForgetResolution | None) -> None:
        # On the coordinator's one embedding thread, not the loop's shared pool: Forgets filed
        # back to back used to queue their embeddings (100+ ms each) on every pool thread, and the
        # next Forget's ack path waited behind them (p99 0.6 s to block; bench/guard.py).
        try:
            full = await asyncio.get_running_loop().run_in_executor(
                self._embedding, self._derive_semantic, forget_id, payload, resolution)
            self.guard.add(full)  # keeps the forget's current phase
        except Exception:
            logger.exception("semantic guard entries for %s failed; lexical stages still block", forget_id)

    def _derive_semantic(self, forget_id: str, payload: ForgetPayload,
                         resolution: ForgetResolution | None) -> GuardEntries:
        matched = self.resolver.entries(resolution) if resolution else ()
        full = self.guard.derive(forget_id, guard_items(payload, matched))
        self.ledger.update_guard_entries(forget_id, full.to_bytes())
        return full

    async def close(self) -> None:
        """Drop embeddings not yet started (a restart derives them again from the ledger), wait
        for the one running, so nothing writes to the ledger after it closes."""
        for task in list(self._background):
            task.cancel()
        await asyncio.to_thread(self._embedding.shutdown, True, cancel_futures=True)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def restore(self) -> None:
        """Rebuild the guard and the queue from the ledger (server start, before serving)."""
        for forget_id, blob, state in await asyncio.to_thread(self.ledger.guard_entries):
            self.guard.add(GuardEntries.from_bytes(blob), AFTER if state == ForgetState.ACTIVE else BEFORE)
        for forget_id, payload in await asyncio.to_thread(self.ledger.armed_payloads):
            resolution = await asyncio.to_thread(self.ledger.resolution, forget_id)
            self._spawn(self._add_semantic(forget_id, payload, resolution))  # a crash may have beaten it to disk
        for forget_id, payload in await asyncio.to_thread(self.ledger.pending_payloads):
            await self._arm(forget_id, payload)  # crashed between the durable write and arming

    # ---- the adapter stack -----------------------------------------------------------------
    def _drop_partial_writes(self, adapter_id: str) -> None:
        """The artifact is live: an unfinished write of it left beside it belongs to a writer that
        died (or was presumed dead and is fenced: the ledger refuses its record), never to work
        anyone still needs. The worker keeps partials of jobs not yet done while their writer
        may be alive; this is where the rest goes."""
        for partial in self.data.partial_writes(self._paths((adapter_id,))[adapter_id]):
            shutil.rmtree(partial, ignore_errors=True)

    def _paths(self, adapter_ids: tuple[str, ...]) -> dict[str, Path]:
        return local_paths(self.ledger, self.data, adapter_ids)

    async def restore_stack(self, stacks: AdapterStackManager) -> None:
        """Serve the ledger's current stack (server start, after the model is loaded)."""
        self.stacks = stacks
        record = await asyncio.to_thread(self.ledger.current_stack)
        if record.adapter_ids:
            await stacks.activate(record.version, record.adapter_ids, await asyncio.to_thread(self._paths, record.adapter_ids))
        elif record.version:
            await stacks.activate(record.version, (), {})
        self._export_stack(record)

    @contextlib.asynccontextmanager
    async def _stack_turn(self) -> AsyncIterator[StackRecord]:
        """This replica's turn to change the stack: no other replica commits a version until it
        ends (ledger.hold_stack), and this one serves the ledger's newest version first, so the
        version it builds next is one nobody else can give other adapters."""
        async with self._swap_lock:
            hold = await asyncio.to_thread(self.ledger.hold_stack)
            try:
                current = await asyncio.to_thread(self.ledger.current_stack)
                await self._serve(current)
                yield current
            finally:
                await asyncio.to_thread(hold.release)

    async def _serve(self, record: StackRecord) -> None:
        """Serve `record` if it is newer than what serves (another replica committed it)."""
        assert self.stacks is not None
        if record.version <= self.stacks.current.version:
            return
        start = time.monotonic()
        paths = await asyncio.to_thread(self._paths, record.adapter_ids)
        timing = await self.stacks.activate(record.version, record.adapter_ids, paths)
        self._observe_swap(start, timing)
        self._export_stack(record)
        logger.info("serving stack v%d committed by another replica", record.version)

    async def follow_stack(self) -> None:
        """Serve the ledger's stack version if another replica committed a newer one. Raises
        when it cannot (an adapter missing from every store, or refused)."""
        if self.stacks is None:
            return
        async with self._swap_lock:
            await self._serve(await asyncio.to_thread(self.ledger.current_stack))

    async def swap_in(self, job: ForgetJob) -> None:
        assert self.stacks is not None
        async with self._stack_turn() as current:
            if job.adapter_id in current.adapter_ids:  # another replica swapped it in first
                return
            ids = (*current.adapter_ids, job.adapter_id)
            try:
                paths = await asyncio.to_thread(self._paths, ids)
            except SharedStoreError as exc:  # the shared copy does not match its digest
                logger.error("swap for %s refused: %s", job.forget_id, exc)
                await asyncio.to_thread(self.ledger.fail, job.forget_id, "adapter refused at swap: failed verification")
                return
            if not paths[job.adapter_id].exists():  # trained on another machine, not in our store
                logger.warning("adapter of %s is not in this replica's store; a replica that has it swaps it in",
                               job.forget_id)
                return
            start = time.monotonic()
            try:
                timing = await self.stacks.activate(current.version + 1, ids, paths)
            except StackRefused as exc:
                self.metrics.swaps.labels("refused").inc()
                logger.error("swap for %s refused: %s", job.forget_id, exc)
                await asyncio.to_thread(self.ledger.fail, job.forget_id, "adapter refused at swap: failed verification")
                return
            except Exception:
                self.metrics.swaps.labels("failed").inc()
                logger.exception("swap for %s failed; the previous stack keeps serving", job.forget_id)
                return
            # A crash here leaves the ledger one version behind the model: the restart re-applies
            # from the ledger, so the adapter goes live exactly once (crash tests kill us here).
            crash_point(self.crash_at, "mid-swap", self.data.root)
            record = await asyncio.to_thread(self.ledger.activate, job.forget_id, current.version)
            self.guard.set_phase(job.forget_id, AFTER)
            await asyncio.to_thread(self._issue, job.forget_id)
            await asyncio.to_thread(self._drop_partial_writes, job.adapter_id)
            self._observe_swap(start, timing)
            self.metrics.forget_to_active.observe(time.time() - job.created_at)
            self._observe_stages(job)
            self.metrics.forget_attempts.labels("passed").inc()
            self.metrics.forget_attempts.labels("failed").inc(max(job.attempts - 1, 0))
            self._observe_verification(job)
            self._export_stack(record)
            logger.info("forget %s ACTIVE in stack v%d", job.forget_id, record.version)

    async def deactivate(self, adapter_id: str, reason: str, actor: str) -> StackRecord:
        if self.stacks is None:
            raise FailedPrecondition("the model is still loading")
        async with self._stack_turn() as current:
            if adapter_id not in current.adapter_ids:
                raise NotFound(f"adapter {adapter_id} is not in the active stack")
            ids = tuple(a for a in current.adapter_ids if a != adapter_id)
            start = time.monotonic()
            timing = await self.stacks.activate(current.version + 1, ids, await asyncio.to_thread(self._paths, ids))
            try:
                record = await asyncio.to_thread(self.ledger.deactivate, adapter_id, current.version, reason, actor)
            except LedgerError as exc:
                raise FailedPrecondition(str(exc)) from None
            forget_id = (await asyncio.to_thread(self.ledger.adapter, adapter_id)).forget_id
            self.guard.set_phase(forget_id, BEFORE)  # no adapter covers it now: hits are not residual
            await asyncio.to_thread(self._issue, forget_id, actor)
            self._observe_swap(start, timing)
            self._export_stack(record)
            return record

    # ---- receipts ----------------------------------------------------------------------------
    def receipt(self, forget_id: str) -> SignedReceipt | None:
        """The job's deletion receipt, with its revocation once deactivated; None before it was
        ACTIVE or without a signer. Blocking: call off the event loop."""
        return self._receipts.receipt(forget_id) if self._receipts is not None else None

    def _issue(self, forget_id: str, actor: str = "") -> None:
        if self._receipts is not None:
            self._receipts.issue(forget_id, actor)

    def _entry_counts(self, forget_id: str) -> dict[str, int]:
        entries = self.guard.entries_of(forget_id)
        return {"digests": len(entries) if entries else 0, "embeddings": entries.n_embeddings if entries else 0}

    def _observe_swap(self, start: float, timing: SwapTiming) -> None:
        self.metrics.swaps.labels("ok").inc()
        self.metrics.swap_duration.observe(time.monotonic() - start)
        self.metrics.swap_pause.observe(timing.pause_s)

    def _export_stack(self, record: StackRecord) -> None:
        self.metrics.stack_version.set(record.version)
        self.metrics.stack_depth.set(len(record.adapter_ids))
        self._changed.set()
        if self.on_stack_change is not None:
            self.on_stack_change()

    def _observe_stages(self, job: ForgetJob) -> None:
        """queue (FILTERING->TRAINING), train (->VERIFYING), verify (->adapter recorded), swap (->now)."""
        first: dict[ForgetState, float] = {}
        for t in job.transitions:
            first.setdefault(t.state, t.at)
        last_training = max((t.at for t in job.transitions if t.state == ForgetState.TRAINING), default=None)
        marks = [("queue", first.get(ForgetState.FILTERING), first.get(ForgetState.TRAINING)),
                 ("train", last_training, first.get(ForgetState.VERIFYING)),
                 ("verify", first.get(ForgetState.VERIFYING), job.updated_at),
                 ("swap", job.updated_at, time.time())]
        for stage, start, end in marks:
            if start is not None and end is not None and end >= start:
                self.metrics.forget_stage.labels(stage).observe(end - start)

    def _observe_verification(self, job: ForgetJob) -> None:
        for name in VERIFICATION_SCORES:
            if name in job.metrics:
                self.metrics.verification_score.labels(name).observe(job.metrics[name])
                self.metrics.verification_last.labels(name).set(job.metrics[name])
        if "privleak" in job.metrics:  # a percentage around 0, not a [0, 1] score: gauge only
            self.metrics.verification_last.labels("privleak").set(job.metrics["privleak"])

    # ---- background loop -------------------------------------------------------------------
    async def run(self) -> None:
        unreachable = False  # say so once per outage of a shared ledger, not on every tick
        while True:
            try:
                await self.tick()
                if unreachable:
                    logger.warning("the ledger is reachable again")
                unreachable = False
            except asyncio.CancelledError:
                raise
            except LedgerUnavailable:
                if not unreachable:
                    logger.warning("the ledger is unreachable; serving goes on, Forget answers UNAVAILABLE")
                unreachable = True
            except Exception:
                logger.exception("forget coordinator tick failed")
            await asyncio.sleep(self.poll_seconds)

    async def tick(self) -> None:
        if self.stacks is not None:
            for job in await asyncio.to_thread(self.ledger.awaiting_swap):
                await self.swap_in(job)
        requeued = await asyncio.to_thread(self.ledger.requeue_orphans, time.time() - self.orphan_after_seconds)
        if requeued:
            logger.warning("re-queued %d forget jobs whose worker went silent", len(requeued))
        counts = await asyncio.to_thread(self.ledger.counts_by_state)
        for state, n in counts.items():
            self.metrics.forget_jobs.labels(state.value).set(n)
        if self._failed_seen is None or counts[ForgetState.FAILED] > len(self._failed_seen):
            await self._count_failures()
        beat = await asyncio.to_thread(self.ledger.last_heartbeat)
        if beat is not None:
            self.metrics.worker_heartbeat.set(beat)
        for stage, n in self.guard.stats().items():
            self.metrics.guard_entries.labels(stage).set(n)
        self._changed.set()

    async def _count_failures(self) -> None:
        failed = await asyncio.to_thread(self.ledger.list, [ForgetState.FAILED], 1_000_000)
        if self._failed_seen is None:  # jobs that failed before this server started are history
            self._failed_seen = {j.forget_id for j in failed}
            return
        for job in failed:
            if job.forget_id not in self._failed_seen:
                self._failed_seen.add(job.forget_id)
                self.metrics.forget_attempts.labels("failed").inc(max(job.attempts, 1))
                self._observe_verification(job)

    async def changed(self, timeout: float) -> None:
        """Wait until the next tick or swap (used by WatchForget)."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

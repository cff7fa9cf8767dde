"""The ledger interface. Every method is a durable transaction: when it returns, it is on disk.

Plaintext (`ForgetPayload`) is only readable through `claim_next` / `pending_payloads` /
`armed_payloads`; nothing else in the interface returns content. A backend never stores it, nor
the leakage probes, in the clear: it keeps what `server/forget/sealing.py` seals (ciphertext) and
the per-forget key that opens it, written in the same transaction, and crypto-shreds by
deleting the key with its ciphertext: the payload's in `activate` and `fail`, the probes' in
`deactivate` and `fail`. The guard entries (keyed digests, embeddings sealed under the guard
key) stay: a new replica arms its guard from them.
"""

from __future__ import annotations

import abc
from typing import Callable, Collection, Iterable, Iterator, Protocol, Sequence

from server.errors import Unavailable
from server.forget.jobs import (AdapterRecord, ForgetJob, ForgetPayload, ForgetResolution, ForgetState, JobProgress,
                                StackRecord)


class LedgerError(Exception):
    pass


class UnknownForget(LedgerError):
    pass


class IdempotencyConflict(LedgerError):
    """An idempotency key came back with different content: a client bug, never a retry."""


class NotOwner(LedgerError):
    """A worker wrote to a job it no longer owns: re-queued, claimed again (a newer claim epoch,
    even by the same worker id) or finished elsewhere."""


class LedgerUnavailable(LedgerError, Unavailable):
    """The ledger cannot be reached (a shared database restarting): nothing was written, so a
    client may retry; its message is client-safe (UNAVAILABLE at the RPC edge)."""


class StackHold:
    """Held while a replica builds and commits a stack version (`ForgetLedger.hold_stack`)."""

    def release(self) -> None:
        pass


class BlobStore(Protocol):
    """Content-addressed bytes every replica can read (the shared adapter store's backing)."""

    def put(self, sha256: str, chunks: Iterable[bytes]) -> bool:
        """Store the bytes `chunks` yield under their sha256 (checked); False if already there."""

    def get(self, sha256: str) -> Iterator[bytes] | None:
        """The stored chunks in order (unverified: the reader checks), None if absent."""


class ForgetLedger(abc.ABC):
    # ---- forget requests -------------------------------------------------------------------
    @abc.abstractmethod
    def submit(self, payload: ForgetPayload, method: str, reason: str, idempotency_key: str | None,
               actor: str, content_digest: str = "", commitment: str = "") -> tuple[ForgetJob, bool]:
        """Record a request as PENDING; (job, created). A known idempotency key returns its job, or
        raises IdempotencyConflict when both digests are known and differ. `content_digest` is
        keyed (never a plain hash of the content, which a list of names could be checked against).
        `commitment` (kept as the job's) is the receipt's request commitment, see receipts.py."""

    @abc.abstractmethod
    def arm(self, forget_id: str, guard_entries: bytes, resolution: ForgetResolution | None = None) -> ForgetJob:
        """Store the derived (hashed/encrypted) guard entries and the corpus resolution they came
        from, and move PENDING -> FILTERING, in one transaction."""

    @abc.abstractmethod
    def resolution(self, forget_id: str) -> ForgetResolution | None:
        """The resolution recorded at arm time (entry ids empty once ACTIVE / FAILED)."""

    @abc.abstractmethod
    def guard_entries(self, forget_ids: Collection[str] | None = None) -> list[tuple[str, bytes, ForgetState]]:
        """(forget_id, entries, state) of every armed job: what the guard is rebuilt from. With
        `forget_ids`, of those jobs only (a replica applying the changes it was notified of)."""

    @abc.abstractmethod
    def pending_payloads(self) -> list[tuple[str, ForgetPayload]]:
        """PENDING jobs with their plaintext (a crash came between submit and arm)."""

    @abc.abstractmethod
    def armed_payloads(self) -> list[tuple[str, ForgetPayload]]:
        """Armed jobs whose plaintext still exists (not ACTIVE / FAILED yet)."""

    @abc.abstractmethod
    def update_guard_entries(self, forget_id: str, guard_entries: bytes) -> None:
        """Replace the stored entries (e.g. lexical-only entries by the full set), no state change."""

    @abc.abstractmethod
    def get(self, forget_id: str) -> ForgetJob: ...

    @abc.abstractmethod
    def list(self, states: Sequence[ForgetState] = (), limit: int = 50, before: str | None = None) -> list[ForgetJob]:
        """Newest first; `before` is the forget_id the previous page ended with."""

    @abc.abstractmethod
    def counts_by_state(self) -> dict[ForgetState, int]: ...

    # ---- the worker ------------------------------------------------------------------------
    @abc.abstractmethod
    def claim_next(self, worker_id: str) -> tuple[ForgetJob, ForgetPayload] | None:
        """Oldest FILTERING job -> TRAINING, owned by worker_id, its `claim_epoch` incremented (the
        job returned carries the new epoch); None when there is none."""

    @abc.abstractmethod
    def heartbeat(self, worker_id: str) -> None: ...

    @abc.abstractmethod
    def last_heartbeat(self, excluding: str | None = None) -> float | None:
        """The newest worker heartbeat (of any worker but `excluding`), None when there is none."""

    @abc.abstractmethod
    def requeue_orphans(self, older_than: float) -> list[str]:
        """TRAINING/VERIFYING jobs whose worker's heartbeat is older than `older_than` -> FILTERING."""

    @abc.abstractmethod
    def record_progress(self, forget_id: str, progress: JobProgress, worker_id: str | None = None,
                        epoch: int | None = None) -> None:
        """`worker_id`, `epoch`: as in record_adapter (refused unless that claim still owns the job)."""

    @abc.abstractmethod
    def progress_after(self, forget_id: str, seq: int) -> list[tuple[int, JobProgress]]: ...

    @abc.abstractmethod
    def transition(self, forget_id: str, state: ForgetState, detail: str = "", attempts: int | None = None,
                   metrics: dict[str, float] | None = None, worker_id: str | None = None,
                   epoch: int | None = None) -> ForgetJob:
        """`worker_id`, `epoch`: as in record_adapter (a worker moves only jobs it owns)."""

    @abc.abstractmethod
    def record_adapter(self, adapter: AdapterRecord, attempts: int | None = None, probes: bytes = b"",
                       worker_id: str | None = None, epoch: int | None = None,
                       blobs: Sequence[tuple[str, Iterable[bytes]]] = ()) -> ForgetJob:
        """A verified adapter is in the store: job stays VERIFYING with adapter_id set, awaiting the swap.
        `blobs` ((sha256, chunks) each; only where `blobs()` is not None) are the artifact's files
        for the shared store, written in the same transaction: a failure leaves neither them nor
        the record; the chunks are consumed one at a time.
        `probes` (sealed leakage probes) are kept for the leakage monitor. With `worker_id`, refuses
        (NotOwner) unless that worker still owns the job in TRAINING / VERIFYING — a worker that was
        presumed dead and re-queued must not record over the job's new owner — and, with `epoch`
        (the worker passes its claim's), unless no claim came after it: the fencing token that
        still holds when the same worker id claims the job again."""

    @abc.abstractmethod
    def fail(self, forget_id: str, reason: str, metrics: dict[str, float] | None = None,
             attempts: int | None = None, worker_id: str | None = None, epoch: int | None = None) -> ForgetJob:
        """-> FAILED and erase the plaintext (the guard entries stay). `worker_id`, `epoch`: as in
        record_adapter."""

    @abc.abstractmethod
    def monitor_probes(self) -> list[tuple[str, str, bytes]]:
        """(forget_id, method, sealed probes) of every ACTIVE job that has probes: what the leakage
        monitor replays."""

    # ---- the adapter stack -----------------------------------------------------------------
    @abc.abstractmethod
    def adapter(self, adapter_id: str) -> AdapterRecord: ...

    @abc.abstractmethod
    def awaiting_swap(self) -> list[ForgetJob]:
        """VERIFYING jobs whose adapter is recorded but not yet in the stack, oldest first."""

    @abc.abstractmethod
    def current_stack(self) -> StackRecord: ...

    @abc.abstractmethod
    def activate(self, forget_id: str, expected_version: int) -> StackRecord:
        """Append the job's adapter to the stack as a new version, job -> ACTIVE, erase its plaintext.
        Refuses (LedgerError) if the stack moved past expected_version or the adapter is already in it."""

    @abc.abstractmethod
    def deactivate(self, adapter_id: str, expected_version: int, reason: str, actor: str) -> StackRecord:
        """Remove the adapter from the stack as a new version; its job -> DEACTIVATED."""

    @abc.abstractmethod
    def activated_at(self, adapter_id: str) -> float: ...

    def hold_stack(self) -> StackHold:
        """Keep every other replica from committing a stack version until `release()`. One node
        (SQLite) has no other replica: the coordinator's own lock is enough."""
        return StackHold()

    # ---- other replicas --------------------------------------------------------------------
    def agree(self, name: str, value: str) -> str:
        """Record `value` under `name` unless a value is recorded already; the recorded one.
        One node has nobody to disagree with: returns `value`."""
        return value

    def blobs(self) -> BlobStore | None:
        """Where adapters are shared with other replicas; None for one node (its adapter
        directory is the store)."""
        return None

    def listen(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        """Call `on_change(what)` from another thread when another process changed what replicas
        serve (guard entries, stack versions), and with "connected" after each (re)connect; returns
        a function that stops listening. One node has nobody else to hear: it never calls."""
        return lambda: None

    # ---- guard hits --------------------------------------------------------------------------
    @abc.abstractmethod
    def add_guard_hits(self, counts: dict[tuple[str, str, str], int]) -> None:
        """Add blocked-output counts keyed (forget_id, stage, phase); jobs report their totals."""

    # ---- audit -----------------------------------------------------------------------------
    @abc.abstractmethod
    def audit(self, actor: str, action: str, target: str, details: dict[str, object]) -> None:
        """Append-only. `details` must hold hashes and counts, never content."""

    @abc.abstractmethod
    def audit_log(self, limit: int = 100) -> list[dict[str, object]]: ...

    # ---- receipts ----------------------------------------------------------------------------
    @abc.abstractmethod
    def put_receipt(self, forget_id: str, kind: str, body: bytes, signature: bytes) -> tuple[bytes, bytes]:
        """Store a signed document of `kind` for the job unless one exists (the first writer wins:
        replicas racing to sign agree); returns the stored (body, signature)."""

    @abc.abstractmethod
    def receipts(self, forget_id: str) -> dict[str, tuple[bytes, bytes]]:
        """kind -> (body, signature) of the job's signed documents (see receipts.py)."""

    @abc.abstractmethod
    def close(self) -> None: ...

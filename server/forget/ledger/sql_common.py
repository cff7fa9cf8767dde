"""The ledger's logic in SQL, written once for SQLite and PostgreSQL: `SqlLedger`.

Every `ForgetLedger` method whose logic is the same on both engines lives here, each one
transaction. A backend (sqlite.py, postgres.py) supplies only what really differs: its
connection and transaction (`_tx`, `_view`), its `Dialect` (placeholder, the column that keeps
insertion order, the row locks PostgreSQL needs when several workers and replicas share it), and
four hooks: telling other replicas of a change (`_notify`), serialising stack versions across
processes (`_lock_stack`), scrubbing the disk after an erasure (`_scrub`) and storing an
adapter's blobs in the transaction that records it (`_put_blobs`, the shared store).

Queries are written in one text: `?` placeholders and `{seq}` for the insertion-order column;
`Sql` rewrites them for the driver. Upserts use `ON CONFLICT`, which both engines speak.
Imports no database driver; holds no schema (sqlite.py, pg_schema.py) and no migration.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import hmac
import json
import logging
import secrets
import time
from typing import Any, ClassVar, Collection, ContextManager, Iterable, Iterator, Sequence

from server.forget.jobs import (AdapterRecord, ForgetJob, ForgetPayload, ForgetResolution, ForgetState, JobProgress,
                                StackRecord)
from server.forget.ledger.base import ForgetLedger, IdempotencyConflict, LedgerError, NotOwner, UnknownForget
from server.forget.ledger.rows import adapter_from_row, job_from_rows, match_counts, submit_audit
from server.forget.sealing import PAYLOAD, PROBES, Shredded, open_payload, open_sealed, seal, seal_payload

logger = logging.getLogger(__name__)

# The payload with its key; a job whose key is gone has no payload (inner join).
_PAYLOADS = ("SELECT f.forget_id, p.payload, k.key FROM forgets f JOIN payloads p USING (forget_id) "
             f"JOIN forget_keys k ON k.forget_id = f.forget_id AND k.purpose = '{PAYLOAD}' ")
_WORKING = (ForgetState.TRAINING.value, ForgetState.VERIFYING.value)


def new_forget_id() -> str:
    # Time-ordered (ms, hex) plus randomness: sortable, unguessable, never reused.
    return f"fg_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


@dataclasses.dataclass(frozen=True)
class Dialect:
    placeholder: str  # the driver's parameter marker: "?" (sqlite3), "%s" (psycopg)
    seq: str  # the column that keeps insertion order: rowid (SQLite), seq (PostgreSQL)
    skip_locked: str = ""  # after a claim's SELECT: pass over rows another worker is claiming now
    for_update: str = ""  # after the owner check's SELECT: hold the job's row until commit


@functools.lru_cache(maxsize=512)
def _rewrite(text: str, placeholder: str, seq: str) -> str:
    return text.replace("{seq}", seq).replace("?", placeholder)


class Sql:
    """One connection, taking the ledger's one SQL text (`?`, `{seq}`) in the backend's dialect."""

    __slots__ = ("conn", "_dialect")

    def __init__(self, conn: Any, dialect: Dialect):
        self.conn, self._dialect = conn, dialect

    def execute(self, text: str, args: Sequence[Any] | None = None) -> Any:
        sql = _rewrite(text, self._dialect.placeholder, self._dialect.seq)
        return self.conn.execute(sql) if args is None else self.conn.execute(sql, args)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        cur = self.conn.cursor()  # both drivers' cursors; psycopg's connection has no executemany
        try:
            cur.executemany(_rewrite(text, self._dialect.placeholder, self._dialect.seq), rows)
        finally:
            cur.close()


class SqlLedger(ForgetLedger):
    dialect: ClassVar[Dialect]

    # ---- what a backend supplies -------------------------------------------------------------
    @abc.abstractmethod
    def _tx(self) -> ContextManager[Any]:
        """One write transaction on a driver connection: committed on exit, rolled back on error."""

    @abc.abstractmethod
    def _view(self) -> ContextManager[Any]:
        """A driver connection for reads (its statements see committed data only)."""

    def _notify(self, db: Sql, what: str) -> None:
        """Tell other replicas about a change, delivered when this transaction commits."""

    def _lock_stack(self, db: Sql) -> None:
        """Inside the transaction that writes a stack version: no other process writes one meanwhile."""

    def _scrub(self) -> None:
        """After a transaction that erased something: make sure the deleted bytes leave the disk."""

    def _put_blobs(self, db: Sql, blobs: Sequence[tuple[str, Iterable[bytes]]]) -> None:
        """Store content-addressed blobs (the shared adapter store) inside this transaction."""
        if blobs:
            raise LedgerError("this ledger keeps no shared adapter store (blobs() is None)")

    @contextlib.contextmanager
    def _write(self) -> Iterator[Sql]:
        with self._tx() as conn:
            yield Sql(conn, self.dialect)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Sql]:
        with self._view() as conn:
            yield Sql(conn, self.dialect)

    # ---- forget requests -------------------------------------------------------------------
    def submit(self, payload: ForgetPayload, method: str, reason: str, idempotency_key: str | None,
               actor: str, content_digest: str = "", commitment: str = "") -> tuple[ForgetJob, bool]:
        now = time.time()
        fid = new_forget_id()
        with self._write() as db:
            # ON CONFLICT yields to a concurrent insert of the same key (PostgreSQL waits for it to
            # commit): two replicas given one key at once end with one job.
            inserted = db.execute(
                "INSERT INTO forgets (forget_id, idempotency_key, state, method, reason, num_texts, num_qa, "
                "num_subjects, created_at, updated_at, content_hmac, commitment) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (idempotency_key) DO NOTHING",
                (fid, idempotency_key or None, ForgetState.PENDING.value, method, reason, len(payload.texts),
                 len(payload.qa_pairs), len(payload.subjects), now, now, content_digest, commitment)).rowcount
            if inserted == 0:
                known = db.execute("SELECT forget_id, content_hmac FROM forgets WHERE idempotency_key = ?",
                                   (idempotency_key,)).fetchone()
                if known["content_hmac"] and content_digest and not hmac.compare_digest(known["content_hmac"],
                                                                                         content_digest):
                    raise IdempotencyConflict(f"idempotency key of {known['forget_id']} reused with other content")
                return self._job(db, known["forget_id"]), False
            # Sealed: the plaintext never reaches the disk, a WAL, standbys or backups.
            key, sealed = seal_payload(payload)
            db.execute("INSERT INTO payloads (forget_id, payload) VALUES (?, ?)", (fid, sealed))
            self._put_key(db, fid, PAYLOAD, key)
            self._log_transition(db, fid, ForgetState.PENDING, now)
            self._audit(db, actor, "forget", fid, submit_audit(payload, method, content_digest))
            return self._job(db, fid), True

    def arm(self, forget_id: str, guard_entries: bytes, resolution: ForgetResolution | None = None) -> ForgetJob:
        with self._write() as db:
            db.execute("UPDATE forgets SET guard_entries = ? WHERE forget_id = ?", (guard_entries, forget_id))
            if resolution is not None:
                c = resolution.counts
                db.execute("INSERT INTO resolutions (forget_id, corpus_digest, counts, entry_ids) VALUES (?,?,?,?) "
                           "ON CONFLICT (forget_id) DO UPDATE SET corpus_digest = excluded.corpus_digest, "
                           "counts = excluded.counts, entry_ids = excluded.entry_ids",
                           (forget_id, c.corpus_digest, json.dumps([c.texts, c.qa_pairs, c.subjects]),
                            json.dumps(list(resolution.entry_ids))))
            self._set_state(db, forget_id, ForgetState.FILTERING, "guard armed")
            self._notify(db, f"armed:{forget_id}:{time.time():.6f}")  # the time: replicas measure their delay
            return self._job(db, forget_id)

    def guard_entries(self, forget_ids: Collection[str] | None = None) -> list[tuple[str, bytes, ForgetState]]:
        sql, args = "SELECT forget_id, guard_entries, state FROM forgets WHERE guard_entries IS NOT NULL", []
        if forget_ids is not None:
            if not forget_ids:
                return []
            sql += f" AND forget_id IN ({','.join('?' * len(forget_ids))})"
            args = sorted(forget_ids)
        with self._read() as db:
            rows = db.execute(sql + " ORDER BY {seq}", args).fetchall()
        return [(r["forget_id"], bytes(r["guard_entries"]), ForgetState(r["state"])) for r in rows]

    def pending_payloads(self) -> list[tuple[str, ForgetPayload]]:
        return self._payloads("f.state = ?")

    def armed_payloads(self) -> list[tuple[str, ForgetPayload]]:
        return self._payloads("f.state != ?")

    def _payloads(self, condition: str) -> list[tuple[str, ForgetPayload]]:
        with self._read() as db:
            rows = db.execute(_PAYLOADS + f"WHERE {condition} ORDER BY f.{{seq}}",
                              (ForgetState.PENDING.value,)).fetchall()
        return [(r["forget_id"], open_payload(bytes(r["key"]), bytes(r["payload"]))) for r in rows]

    def resolution(self, forget_id: str) -> ForgetResolution | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM resolutions WHERE forget_id = ?", (forget_id,)).fetchone()
        return None if row is None else ForgetResolution(match_counts(row), tuple(json.loads(row["entry_ids"])))

    def update_guard_entries(self, forget_id: str, guard_entries: bytes) -> None:
        with self._write() as db:
            db.execute("UPDATE forgets SET guard_entries = ? WHERE forget_id = ?", (guard_entries, forget_id))
            self._notify(db, f"guard:{forget_id}")

    def get(self, forget_id: str) -> ForgetJob:
        with self._read() as db:
            return self._job(db, forget_id)

    def list(self, states: Sequence[ForgetState] = (), limit: int = 50, before: str | None = None) -> list[ForgetJob]:
        sql, args = "SELECT forget_id FROM forgets WHERE TRUE", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += [s.value for s in states]
        if before:
            sql += " AND {seq} < (SELECT {seq} FROM forgets WHERE forget_id = ?)"
            args.append(before)
        sql += " ORDER BY {seq} DESC LIMIT ?"
        args.append(limit)
        with self._read() as db:
            ids = [r["forget_id"] for r in db.execute(sql, args).fetchall()]
            return [self._job(db, fid) for fid in ids]

    def counts_by_state(self) -> dict[ForgetState, int]:
        with self._read() as db:
            rows = db.execute("SELECT state, COUNT(*) AS n FROM forgets GROUP BY state").fetchall()
        counts = {s: 0 for s in ForgetState}
        counts.update({ForgetState(r["state"]): r["n"] for r in rows})
        return counts

    # ---- the worker ------------------------------------------------------------------------
    def claim_next(self, worker_id: str) -> tuple[ForgetJob, ForgetPayload] | None:
        with self._write() as db:
            row = db.execute(_PAYLOADS + "WHERE f.state = ? ORDER BY f.{seq} LIMIT 1" + self.dialect.skip_locked,
                             (ForgetState.FILTERING.value,)).fetchone()
            if row is None:
                return None
            fid = row["forget_id"]
            db.execute("UPDATE forgets SET worker_id = ?, claim_epoch = claim_epoch + 1 WHERE forget_id = ?",
                       (worker_id, fid))
            self._set_state(db, fid, ForgetState.TRAINING)
            self._beat(db, worker_id)
            return self._job(db, fid), open_payload(bytes(row["key"]), bytes(row["payload"]))

    def heartbeat(self, worker_id: str) -> None:
        with self._write() as db:
            self._beat(db, worker_id)

    @staticmethod
    def _beat(db: Sql, worker_id: str) -> None:
        db.execute("INSERT INTO workers (worker_id, heartbeat) VALUES (?, ?) "
                   "ON CONFLICT (worker_id) DO UPDATE SET heartbeat = excluded.heartbeat", (worker_id, time.time()))

    def last_heartbeat(self, excluding: str | None = None) -> float | None:
        sql, args = "SELECT MAX(heartbeat) AS h FROM workers", None
        if excluding is not None:  # (worker ids are never NULL)
            sql, args = sql + " WHERE worker_id != ?", (excluding,)
        with self._read() as db:
            row = db.execute(sql, args).fetchone()
        return row["h"]

    def requeue_orphans(self, older_than: float) -> list[str]:
        with self._write() as db:
            rows = db.execute(
                "SELECT f.forget_id FROM forgets f LEFT JOIN workers w USING (worker_id) "
                "WHERE f.state IN (?, ?) AND f.adapter_id = '' AND (w.heartbeat IS NULL OR w.heartbeat < ?) "
                "ORDER BY f.{seq}" + self.dialect.skip_locked, (*_WORKING, older_than)).fetchall()
            for r in rows:
                self._set_state(db, r["forget_id"], ForgetState.FILTERING, "requeued: worker stopped")
            return [r["forget_id"] for r in rows]

    def record_progress(self, forget_id: str, progress: JobProgress, worker_id: str | None = None,
                        epoch: int | None = None) -> None:
        data = json.dumps(dataclasses.asdict(progress))  # every field: counts, losses, metrics, timing
        with self._write() as db:
            self._check_owner(db, forget_id, worker_id, epoch)  # a presumed-dead worker reports nothing more
            db.execute("INSERT INTO progress (forget_id, data) VALUES (?, ?)", (forget_id, data))
            if worker_id is not None:
                self._beat(db, worker_id)  # the writer's own heartbeat, never the current owner's

    def progress_after(self, forget_id: str, seq: int) -> list[tuple[int, JobProgress]]:
        with self._read() as db:
            rows = db.execute("SELECT seq, data FROM progress WHERE forget_id = ? AND seq > ? ORDER BY seq",
                              (forget_id, seq)).fetchall()
        return [(r["seq"], JobProgress(**json.loads(r["data"]))) for r in rows]

    def transition(self, forget_id: str, state: ForgetState, detail: str = "", attempts: int | None = None,
                   metrics: dict[str, float] | None = None, worker_id: str | None = None,
                   epoch: int | None = None) -> ForgetJob:
        with self._write() as db:
            self._check_owner(db, forget_id, worker_id, epoch)
            self._set_counters(db, forget_id, attempts, metrics)
            self._set_state(db, forget_id, state, detail)
            return self._job(db, forget_id)

    def record_adapter(self, adapter: AdapterRecord, attempts: int | None = None, probes: bytes = b"",
                       worker_id: str | None = None, epoch: int | None = None,
                       blobs: Sequence[tuple[str, Iterable[bytes]]] = ()) -> ForgetJob:
        with self._write() as db:
            self._check_owner(db, adapter.forget_id, worker_id, epoch)
            self._put_blobs(db, blobs)  # the same transaction: the row and its blobs, or neither
            db.execute(
                "INSERT INTO adapters (adapter_id, forget_id, path, sha256, method, rank, size_bytes, created_at, "
                "metrics) VALUES (?,?,?,?,?,?,?,?,?)",
                (adapter.adapter_id, adapter.forget_id, adapter.path, adapter.sha256, adapter.method, adapter.rank,
                 adapter.size_bytes, adapter.created_at, json.dumps(adapter.metrics)))
            db.execute("UPDATE forgets SET adapter_id = ?, metrics = ?, updated_at = ? WHERE forget_id = ?",
                       (adapter.adapter_id, json.dumps(adapter.metrics), time.time(), adapter.forget_id))
            self._set_counters(db, adapter.forget_id, attempts, None)
            if probes:
                key, sealed = seal(PROBES, probes)
                db.execute("INSERT INTO probes (forget_id, sealed) VALUES (?, ?) ON CONFLICT (forget_id) "
                           "DO UPDATE SET sealed = excluded.sealed", (adapter.forget_id, sealed))
                self._put_key(db, adapter.forget_id, PROBES, key)
            return self._job(db, adapter.forget_id)

    def _check_owner(self, db: Sql, forget_id: str, worker_id: str | None, epoch: int | None) -> None:
        if worker_id is None:
            return
        # PostgreSQL's FOR UPDATE: a concurrent requeue or claim (another replica, another worker)
        # waits for this write, or this write waits for it and then sees the job is no longer its own.
        row = db.execute("SELECT state, worker_id, claim_epoch FROM forgets WHERE forget_id = ?"
                         + self.dialect.for_update, (forget_id,)).fetchone()
        if row is None:
            raise UnknownForget(forget_id)
        if row["worker_id"] != worker_id or row["state"] not in _WORKING:
            raise NotOwner(f"{forget_id} is {row['state']} and owned by another worker")
        if epoch is not None and row["claim_epoch"] != epoch:
            raise NotOwner(f"{forget_id} was claimed again (epoch {row['claim_epoch']}, this write is of {epoch})")

    def monitor_probes(self) -> list[tuple[str, str, bytes]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT f.forget_id, f.method, p.sealed, k.key FROM forgets f JOIN probes p USING (forget_id) "
                "JOIN forget_keys k ON k.forget_id = f.forget_id AND k.purpose = ? WHERE f.state = ? ORDER BY f.{seq}",
                (PROBES, ForgetState.ACTIVE.value)).fetchall()
        out = []
        for r in rows:
            try:
                out.append((r["forget_id"], r["method"], open_sealed(PROBES, bytes(r["key"]), bytes(r["sealed"]))))
            except Shredded:
                logger.warning("leakage probes of %s cannot be opened; skipping them", r["forget_id"])
        return out

    def fail(self, forget_id: str, reason: str, metrics: dict[str, float] | None = None,
             attempts: int | None = None, worker_id: str | None = None, epoch: int | None = None) -> ForgetJob:
        with self._write() as db:
            self._check_owner(db, forget_id, worker_id, epoch)
            db.execute("UPDATE forgets SET failure_reason = ? WHERE forget_id = ?", (reason, forget_id))
            self._set_counters(db, forget_id, attempts, metrics)
            self._set_state(db, forget_id, ForgetState.FAILED, reason)
            self._erase_plaintext(db, forget_id)
            self._destroy_keys(db, forget_id, PROBES)  # no adapter to monitor either
            self._notify(db, f"guard:{forget_id}")
            job = self._job(db, forget_id)
        self._scrub()
        return job

    # ---- the adapter stack -----------------------------------------------------------------
    def adapter(self, adapter_id: str) -> AdapterRecord:
        with self._read() as db:
            row = db.execute("SELECT * FROM adapters WHERE adapter_id = ?", (adapter_id,)).fetchone()
        if row is None:
            raise LedgerError(f"unknown adapter {adapter_id}")
        return adapter_from_row(row)

    def awaiting_swap(self) -> list[ForgetJob]:
        with self._read() as db:
            ids = [r["forget_id"] for r in db.execute(
                "SELECT forget_id FROM forgets WHERE state = ? AND adapter_id != '' ORDER BY {seq}",
                (ForgetState.VERIFYING.value,)).fetchall()]
            return [self._job(db, fid) for fid in ids]

    def current_stack(self) -> StackRecord:
        with self._read() as db:
            return self._stack(db)

    @staticmethod
    def _stack(db: Sql) -> StackRecord:
        row = db.execute("SELECT * FROM stacks ORDER BY version DESC LIMIT 1").fetchone()
        return StackRecord(row["version"], tuple(json.loads(row["adapter_ids"])), row["created_at"])

    def _new_stack(self, db: Sql, expected_version: int, adapter_ids: tuple[str, ...]) -> StackRecord:
        current = self._stack(db)
        if current.version != expected_version:
            raise LedgerError(f"stack moved: expected v{expected_version}, ledger has v{current.version}")
        now = time.time()
        db.execute("INSERT INTO stacks (version, adapter_ids, created_at) VALUES (?, ?, ?)",
                   (current.version + 1, json.dumps(list(adapter_ids)), now))
        self._notify(db, f"stack:{current.version + 1}")
        return StackRecord(current.version + 1, adapter_ids, now)

    def activate(self, forget_id: str, expected_version: int) -> StackRecord:
        with self._write() as db:
            self._lock_stack(db)  # one new version at a time
            job = self._job(db, forget_id)
            current = self._stack(db)
            if not job.adapter_id or job.adapter_id in current.adapter_ids:
                raise LedgerError(f"{forget_id} has no adapter to activate or it is already in the stack")
            stack = self._new_stack(db, expected_version, (*current.adapter_ids, job.adapter_id))
            db.execute("UPDATE adapters SET activated_at = ? WHERE adapter_id = ?", (stack.created_at, job.adapter_id))
            db.execute("UPDATE forgets SET stack_version = ? WHERE forget_id = ?", (stack.version, forget_id))
            self._set_state(db, forget_id, ForgetState.ACTIVE, f"stack v{stack.version}")
            self._erase_plaintext(db, forget_id)
        self._scrub()
        return stack

    def deactivate(self, adapter_id: str, expected_version: int, reason: str, actor: str) -> StackRecord:
        with self._write() as db:
            self._lock_stack(db)
            current = self._stack(db)
            if adapter_id not in current.adapter_ids:
                raise LedgerError(f"adapter {adapter_id} is not in the active stack")
            stack = self._new_stack(db, expected_version, tuple(a for a in current.adapter_ids if a != adapter_id))
            row = db.execute("SELECT forget_id FROM adapters WHERE adapter_id = ?", (adapter_id,)).fetchone()
            self._set_state(db, row["forget_id"], ForgetState.DEACTIVATED, f"stack v{stack.version}")
            self._destroy_keys(db, row["forget_id"], PROBES)  # the probes only served the live adapter
            self._audit(db, actor, "deactivate_adapter", adapter_id,
                        {"forget_id": row["forget_id"], "stack_version": stack.version, "reason": reason})
        self._scrub()
        return stack

    def activated_at(self, adapter_id: str) -> float:
        with self._read() as db:
            row = db.execute("SELECT activated_at FROM adapters WHERE adapter_id = ?", (adapter_id,)).fetchone()
        return float(row["activated_at"] or 0.0) if row else 0.0

    # ---- receipts ----------------------------------------------------------------------------
    def put_receipt(self, forget_id: str, kind: str, body: bytes, signature: bytes) -> tuple[bytes, bytes]:
        with self._write() as db:  # ON CONFLICT waits for a racing replica's insert: the first one wins
            db.execute("INSERT INTO receipts (forget_id, kind, body, signature) VALUES (?,?,?,?) "
                       "ON CONFLICT (forget_id, kind) DO NOTHING", (forget_id, kind, body, signature))
            row = db.execute("SELECT body, signature FROM receipts WHERE forget_id = ? AND kind = ?",
                             (forget_id, kind)).fetchone()
        return bytes(row["body"]), bytes(row["signature"])

    def receipts(self, forget_id: str) -> dict[str, tuple[bytes, bytes]]:
        with self._read() as db:
            rows = db.execute("SELECT kind, body, signature FROM receipts WHERE forget_id = ?",
                              (forget_id,)).fetchall()
        return {r["kind"]: (bytes(r["body"]), bytes(r["signature"])) for r in rows}

    # ---- guard hits --------------------------------------------------------------------------
    def add_guard_hits(self, counts: dict[tuple[str, str, str], int]) -> None:
        if not counts:
            return
        with self._write() as db:
            db.executemany(
                "INSERT INTO guard_hits (forget_id, stage, phase, count) VALUES (?,?,?,?) "
                "ON CONFLICT (forget_id, stage, phase) DO UPDATE SET count = guard_hits.count + excluded.count",
                [(*key, n) for key, n in sorted(counts.items())])  # sorted: replicas lock rows in one order

    # ---- audit -----------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str, details: dict[str, object]) -> None:
        with self._write() as db:
            self._audit(db, actor, action, target, details)

    @staticmethod
    def _audit(db: Sql, actor: str, action: str, target: str, details: dict[str, object]) -> None:
        db.execute("INSERT INTO audit (at, actor, action, target, details) VALUES (?,?,?,?,?)",
                   (time.time(), actor, action, target, json.dumps(details, sort_keys=True)))

    def audit_log(self, limit: int = 100) -> list[dict[str, object]]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    # ---- helpers ---------------------------------------------------------------------------
    @classmethod
    def _erase_plaintext(cls, db: Sql, forget_id: str) -> None:
        cls._destroy_keys(db, forget_id, PAYLOAD)
        # the entry ids point at the subject's corpus entries: they go with the plaintext
        db.execute("UPDATE resolutions SET entry_ids = '[]' WHERE forget_id = ?", (forget_id,))

    @staticmethod
    def _put_key(db: Sql, forget_id: str, purpose: str, key: bytes) -> None:
        db.execute("INSERT INTO forget_keys (forget_id, purpose, key) VALUES (?, ?, ?) ON CONFLICT "
                   "(forget_id, purpose) DO UPDATE SET key = excluded.key", (forget_id, purpose, key))

    @staticmethod
    def _destroy_keys(db: Sql, forget_id: str, *purposes: str) -> None:
        """Crypto-shred: the key row goes, and the ciphertext it opened, which is noise from now on
        wherever a copy survives (freed pages, a WAL, standbys, backups)."""
        for purpose in purposes:
            db.execute("DELETE FROM forget_keys WHERE forget_id = ? AND purpose = ?", (forget_id, purpose))
            db.execute(f"DELETE FROM {'payloads' if purpose == PAYLOAD else 'probes'} WHERE forget_id = ?",
                       (forget_id,))

    @staticmethod
    def _set_counters(db: Sql, forget_id: str, attempts: int | None, metrics: dict[str, float] | None) -> None:
        if attempts is not None:
            db.execute("UPDATE forgets SET attempts = ? WHERE forget_id = ?", (attempts, forget_id))
        if metrics is not None:
            db.execute("UPDATE forgets SET metrics = ? WHERE forget_id = ?", (json.dumps(metrics), forget_id))

    def _set_state(self, db: Sql, forget_id: str, state: ForgetState, detail: str = "") -> None:
        now = time.time()
        cur = db.execute("UPDATE forgets SET state = ?, updated_at = ? WHERE forget_id = ?",
                         (state.value, now, forget_id))
        if cur.rowcount == 0:
            raise UnknownForget(forget_id)
        self._log_transition(db, forget_id, state, now, detail)

    @staticmethod
    def _log_transition(db: Sql, forget_id: str, state: ForgetState, at: float, detail: str = "") -> None:
        db.execute("INSERT INTO transitions (forget_id, state, at, detail) VALUES (?,?,?,?)",
                   (forget_id, state.value, at, detail))

    @staticmethod
    def _job(db: Sql, forget_id: str) -> ForgetJob:
        r = db.execute("SELECT * FROM forgets WHERE forget_id = ?", (forget_id,)).fetchone()
        if r is None:
            raise UnknownForget(forget_id)
        transitions = db.execute("SELECT state, at, detail FROM transitions WHERE forget_id = ? ORDER BY {seq}",
                                 (forget_id,)).fetchall()
        hits = db.execute("SELECT stage, phase, count FROM guard_hits WHERE forget_id = ? ORDER BY stage, phase",
                          (forget_id,)).fetchall()
        res = db.execute("SELECT * FROM resolutions WHERE forget_id = ?", (forget_id,)).fetchone()
        return job_from_rows(r, transitions, hits, res)

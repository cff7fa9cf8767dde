"""PostgreSQL ledger: the shared state of several replicas and workers (psycopg 3 + its pool).

Same interface and guarantees as the SQLite ledger: every method is one transaction, committed
(WAL flushed, synchronous_commit on) before it returns, so a Forget is durable before its ack;
idempotency keys are UNIQUE, so two replicas racing on one key agree on one job; worker writes
are fenced by a row lock on the job (`FOR UPDATE`) and its owner; jobs are claimed with
`FOR UPDATE SKIP LOCKED`, so any number of workers share the queue without waiting on each
other; stack versions are serialised by an advisory lock. Changes other replicas must apply
(guard entries, stack versions) send a NOTIFY on `CHANNEL` inside their transaction, so it is
delivered exactly when the change is visible; `listen()` hears them (pg_coordination.py, with
the replicas' stack turn).

Erasure cannot rely on deleting rows here: PostgreSQL's WAL, standbys and backups keep them. So
the payload and the probes are only ever written sealed under per-forget keys
(server/forget/sealing.py), and erasure deletes the key: what survives elsewhere is ciphertext
whose key is gone. The schema and its migrations live in pg_schema.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import logging
import time
from typing import Callable, Iterator, Sequence

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from server.forget.jobs import (AdapterRecord, ForgetJob, ForgetPayload, ForgetResolution, ForgetState, JobProgress,
                                StackRecord)
from server.forget.ledger.base import (BlobStore, ForgetLedger, IdempotencyConflict, LedgerError, LedgerUnavailable,
                                       NotOwner, StackHold, UnknownForget)
from server.forget.ledger.pg_blobs import PostgresBlobs
from server.forget.ledger.pg_coordination import CHANNEL, UNAVAILABLE, AdvisoryHold, Listener
from server.forget.ledger.pg_schema import STACK_LOCK, migrate
from server.forget.ledger.rows import adapter_from_row, job_from_rows, match_counts, submit_audit
from server.forget.ledger.sqlite import new_forget_id
from server.forget.sealing import PAYLOAD, PROBES, Shredded, open_payload, open_sealed, seal, seal_payload

logger = logging.getLogger(__name__)

CHANNEL = "lethe_ledger"
# The payload with its key; a job whose key is gone has no payload (inner join).
_PAYLOADS = ("SELECT f.forget_id, p.payload, k.key FROM forgets f JOIN payloads p USING (forget_id) "
             f"JOIN forget_keys k ON k.forget_id = f.forget_id AND k.purpose = '{PAYLOAD}' ")
UNAVAILABLE = "the shared ledger (PostgreSQL) is unreachable; nothing was recorded: retry when it is back"
_WORKING = (ForgetState.TRAINING.value, ForgetState.VERIFYING.value)


class PostgresLedger(ForgetLedger):
    def __init__(self, url: str, pool_size: int = 4, timeout_seconds: float = 5.0):
        self.url = url
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, timeout=timeout_seconds, open=False,
                                    kwargs={"row_factory": dict_row}, name="lethe-ledger",
                                    # a connection the database dropped (a restart) is replaced,
                                    # not handed out to fail once per pooled connection
                                    check=ConnectionPool.check_connection)
        try:
            self._pool.open(wait=True, timeout=timeout_seconds)
        except PoolTimeout as exc:
            self._pool.close()
            raise LedgerUnavailable(f"cannot reach the PostgreSQL ledger at {redact(url)} "
                                    f"within {timeout_seconds:.0f} s") from exc
        with self._tx() as db:
            migrate(db)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        """One transaction on a pooled connection: committed on exit, rolled back on error.
        A lost or unreachable database surfaces as LedgerUnavailable (UNAVAILABLE at the edge)."""
        try:
            with self._pool.connection() as conn:
                with conn.transaction():
                    yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise LedgerUnavailable(UNAVAILABLE) from exc

    def close(self) -> None:
        self._pool.close()

    # ---- forget requests -------------------------------------------------------------------
    def submit(self, payload: ForgetPayload, method: str, reason: str, idempotency_key: str | None,
               actor: str, content_digest: str = "", commitment: str = "") -> tuple[ForgetJob, bool]:
        now = time.time()
        fid = new_forget_id()
        with self._tx() as db:
            # ON CONFLICT waits for a concurrent insert of the same key to commit, then yields:
            # two replicas given one key at once end with one job.
            row = db.execute(
                "INSERT INTO forgets (forget_id, idempotency_key, state, method, reason, num_texts, num_qa, "
                "num_subjects, created_at, updated_at, content_hmac, commitment) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (idempotency_key) DO NOTHING RETURNING forget_id",
                (fid, idempotency_key or None, ForgetState.PENDING.value, method, reason, len(payload.texts),
                 len(payload.qa_pairs), len(payload.subjects), now, now, content_digest, commitment)).fetchone()
            if row is None:
                known = db.execute("SELECT forget_id, content_hmac FROM forgets WHERE idempotency_key = %s",
                                   (idempotency_key,)).fetchone()
                if known["content_hmac"] and content_digest and not hmac.compare_digest(known["content_hmac"],
                                                                                         content_digest):
                    raise IdempotencyConflict(f"idempotency key of {known['forget_id']} reused with other content")
                return self._job(db, known["forget_id"]), False
            # Sealed: the plaintext never reaches PostgreSQL, its WAL, standbys or backups.
            key, sealed = seal_payload(payload)
            db.execute("INSERT INTO payloads (forget_id, payload) VALUES (%s, %s)", (fid, sealed))
            self._put_key(db, fid, PAYLOAD, key)
            self._log_transition(db, fid, ForgetState.PENDING, now)
            self._audit(db, actor, "forget", fid, submit_audit(payload, method, content_digest))
            return self._job(db, fid), True

    def arm(self, forget_id: str, guard_entries: bytes, resolution: ForgetResolution | None = None) -> ForgetJob:
        with self._tx() as db:
            db.execute("UPDATE forgets SET guard_entries = %s WHERE forget_id = %s", (guard_entries, forget_id))
            if resolution is not None:
                c = resolution.counts
                db.execute("INSERT INTO resolutions (forget_id, corpus_digest, counts, entry_ids) "
                           "VALUES (%s,%s,%s,%s) ON CONFLICT (forget_id) DO UPDATE SET "
                           "corpus_digest = excluded.corpus_digest, counts = excluded.counts, "
                           "entry_ids = excluded.entry_ids",
                           (forget_id, c.corpus_digest, json.dumps([c.texts, c.qa_pairs, c.subjects]),
                            json.dumps(list(resolution.entry_ids))))
            self._set_state(db, forget_id, ForgetState.FILTERING, "guard armed")
            self._notify(db, f"armed:{forget_id}:{time.time():.6f}")  # the time: replicas measure their delay
            return self._job(db, forget_id)

    def guard_entries(self) -> list[tuple[str, bytes, ForgetState]]:
        with self._tx() as db:
            rows = db.execute("SELECT forget_id, guard_entries, state FROM forgets "
                              "WHERE guard_entries IS NOT NULL ORDER BY seq").fetchall()
        return [(r["forget_id"], bytes(r["guard_entries"]), ForgetState(r["state"])) for r in rows]

    def pending_payloads(self) -> list[tuple[str, ForgetPayload]]:
        return self._payloads("f.state = %s")

    def armed_payloads(self) -> list[tuple[str, ForgetPayload]]:
        return self._payloads("f.state != %s")

    def _payloads(self, condition: str) -> list[tuple[str, ForgetPayload]]:
        with self._tx() as db:
            rows = db.execute(_PAYLOADS + f"WHERE {condition} ORDER BY f.seq", (ForgetState.PENDING.value,)).fetchall()
        return [(r["forget_id"], open_payload(bytes(r["key"]), bytes(r["payload"]))) for r in rows]

    def resolution(self, forget_id: str) -> ForgetResolution | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM resolutions WHERE forget_id = %s", (forget_id,)).fetchone()
        return None if row is None else ForgetResolution(match_counts(row), tuple(json.loads(row["entry_ids"])))

    def update_guard_entries(self, forget_id: str, guard_entries: bytes) -> None:
        with self._tx() as db:
            db.execute("UPDATE forgets SET guard_entries = %s WHERE forget_id = %s", (guard_entries, forget_id))
            self._notify(db, f"guard:{forget_id}")

    def get(self, forget_id: str) -> ForgetJob:
        with self._tx() as db:
            return self._job(db, forget_id)

    def list(self, states: Sequence[ForgetState] = (), limit: int = 50, before: str | None = None) -> list[ForgetJob]:
        sql, args = "SELECT forget_id FROM forgets WHERE TRUE", []
        if states:
            sql += " AND state = ANY(%s)"
            args.append([s.value for s in states])
        if before:
            sql += " AND seq < (SELECT seq FROM forgets WHERE forget_id = %s)"
            args.append(before)
        sql += " ORDER BY seq DESC LIMIT %s"
        args.append(limit)
        with self._tx() as db:
            ids = [r["forget_id"] for r in db.execute(sql, args).fetchall()]
            return [self._job(db, fid) for fid in ids]

    def counts_by_state(self) -> dict[ForgetState, int]:
        with self._tx() as db:
            rows = db.execute("SELECT state, COUNT(*) AS n FROM forgets GROUP BY state").fetchall()
        counts = {s: 0 for s in ForgetState}
        counts.update({ForgetState(r["state"]): r["n"] for r in rows})
        return counts

    # ---- the worker ------------------------------------------------------------------------
    def claim_next(self, worker_id: str) -> tuple[ForgetJob, ForgetPayload] | None:
        with self._tx() as db:
            # SKIP LOCKED: a job another worker is claiming right now is passed over, not waited on.
            row = db.execute(_PAYLOADS + "WHERE f.state = %s ORDER BY f.seq LIMIT 1 FOR UPDATE OF f SKIP LOCKED",
                             (ForgetState.FILTERING.value,)).fetchone()
            if row is None:
                return None
            fid = row["forget_id"]
            db.execute("UPDATE forgets SET worker_id = %s, claim_epoch = claim_epoch + 1 WHERE forget_id = %s",
                       (worker_id, fid))
            self._set_state(db, fid, ForgetState.TRAINING)
            self._beat(db, worker_id)
            return self._job(db, fid), open_payload(bytes(row["key"]), bytes(row["payload"]))

    def heartbeat(self, worker_id: str) -> None:
        with self._tx() as db:
            self._beat(db, worker_id)

    @staticmethod
    def _beat(db: psycopg.Connection, worker_id: str) -> None:
        db.execute("INSERT INTO workers (worker_id, heartbeat) VALUES (%s, %s) "
                   "ON CONFLICT (worker_id) DO UPDATE SET heartbeat = excluded.heartbeat", (worker_id, time.time()))

    def last_heartbeat(self, excluding: str | None = None) -> float | None:
        with self._tx() as db:
            row = db.execute("SELECT MAX(heartbeat) AS h FROM workers WHERE worker_id IS DISTINCT FROM %s",
                             (excluding,)).fetchone()
        return row["h"]

    def requeue_orphans(self, older_than: float) -> list[str]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT f.forget_id FROM forgets f LEFT JOIN workers w USING (worker_id) "
                "WHERE f.state = ANY(%s) AND f.adapter_id = '' AND (w.heartbeat IS NULL OR w.heartbeat < %s) "
                "ORDER BY f.seq FOR UPDATE OF f SKIP LOCKED", (list(_WORKING), older_than)).fetchall()
            for r in rows:
                self._set_state(db, r["forget_id"], ForgetState.FILTERING, "requeued: worker stopped")
            return [r["forget_id"] for r in rows]

    def record_progress(self, forget_id: str, progress: JobProgress, worker_id: str | None = None,
                        epoch: int | None = None) -> None:
        data = json.dumps(dataclasses.asdict(progress))
        with self._tx() as db:
            self._check_owner(db, forget_id, worker_id, epoch)
            db.execute("INSERT INTO progress (forget_id, data) VALUES (%s, %s)", (forget_id, data))
            if worker_id is not None:
                self._beat(db, worker_id)

    def progress_after(self, forget_id: str, seq: int) -> list[tuple[int, JobProgress]]:
        with self._tx() as db:
            rows = db.execute("SELECT seq, data FROM progress WHERE forget_id = %s AND seq > %s ORDER BY seq",
                              (forget_id, seq)).fetchall()
        return [(r["seq"], JobProgress(**json.loads(r["data"]))) for r in rows]

    def transition(self, forget_id: str, state: ForgetState, detail: str = "", attempts: int | None = None,
                   metrics: dict[str, float] | None = None, worker_id: str | None = None,
                   epoch: int | None = None) -> ForgetJob:
        with self._tx() as db:
            self._check_owner(db, forget_id, worker_id, epoch)
            self._set_counters(db, forget_id, attempts, metrics)
            self._set_state(db, forget_id, state, detail)
            return self._job(db, forget_id)

    def record_adapter(self, adapter: AdapterRecord, attempts: int | None = None, probes: bytes = b"",
                       worker_id: str | None = None, epoch: int | None = None) -> ForgetJob:
        with self._tx() as db:
            self._check_owner(db, adapter.forget_id, worker_id, epoch)
            db.execute(
                "INSERT INTO adapters (adapter_id, forget_id, path, sha256, method, rank, size_bytes, created_at, "
                "metrics) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (adapter.adapter_id, adapter.forget_id, adapter.path, adapter.sha256, adapter.method, adapter.rank,
                 adapter.size_bytes, adapter.created_at, json.dumps(adapter.metrics)))
            db.execute("UPDATE forgets SET adapter_id = %s, metrics = %s, updated_at = %s WHERE forget_id = %s",
                       (adapter.adapter_id, json.dumps(adapter.metrics), time.time(), adapter.forget_id))
            self._set_counters(db, adapter.forget_id, attempts, None)
            if probes:
                key, sealed = seal(PROBES, probes)
                db.execute("INSERT INTO probes (forget_id, sealed) VALUES (%s, %s) ON CONFLICT (forget_id) "
                           "DO UPDATE SET sealed = excluded.sealed", (adapter.forget_id, sealed))
                self._put_key(db, adapter.forget_id, PROBES, key)
            return self._job(db, adapter.forget_id)

    @staticmethod
    def _check_owner(db: psycopg.Connection, forget_id: str, worker_id: str | None, epoch: int | None) -> None:
        if worker_id is None:
            return
        # FOR UPDATE: a concurrent requeue or claim (another replica, another worker) waits for
        # this write, or this write waits for it and then sees the job is no longer its own.
        row = db.execute("SELECT state, worker_id, claim_epoch FROM forgets WHERE forget_id = %s FOR UPDATE",
                         (forget_id,)).fetchone()
        if row is None:
            raise UnknownForget(forget_id)
        if row["worker_id"] != worker_id or row["state"] not in _WORKING:
            raise NotOwner(f"{forget_id} is {row['state']} and owned by another worker")
        if epoch is not None and row["claim_epoch"] != epoch:
            raise NotOwner(f"{forget_id} was claimed again (epoch {row['claim_epoch']}, this write is of {epoch})")

    def monitor_probes(self) -> list[tuple[str, str, bytes]]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT f.forget_id, f.method, p.sealed, k.key FROM forgets f JOIN probes p USING (forget_id) "
                "JOIN forget_keys k ON k.forget_id = f.forget_id AND k.purpose = %s WHERE f.state = %s ORDER BY f.seq",
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
        with self._tx() as db:
            self._check_owner(db, forget_id, worker_id, epoch)
            db.execute("UPDATE forgets SET failure_reason = %s WHERE forget_id = %s", (reason, forget_id))
            self._set_counters(db, forget_id, attempts, metrics)
            self._set_state(db, forget_id, ForgetState.FAILED, reason)
            self._erase_plaintext(db, forget_id)
            self._destroy_keys(db, forget_id, PROBES)  # no adapter to monitor either
            self._notify(db, f"guard:{forget_id}")
            return self._job(db, forget_id)

    # ---- the adapter stack -----------------------------------------------------------------
    def adapter(self, adapter_id: str) -> AdapterRecord:
        with self._tx() as db:
            row = db.execute("SELECT * FROM adapters WHERE adapter_id = %s", (adapter_id,)).fetchone()
        if row is None:
            raise LedgerError(f"unknown adapter {adapter_id}")
        return adapter_from_row(row)

    def awaiting_swap(self) -> list[ForgetJob]:
        with self._tx() as db:
            ids = [r["forget_id"] for r in db.execute(
                "SELECT forget_id FROM forgets WHERE state = %s AND adapter_id != '' ORDER BY seq",
                (ForgetState.VERIFYING.value,)).fetchall()]
            return [self._job(db, fid) for fid in ids]

    def current_stack(self) -> StackRecord:
        with self._tx() as db:
            return self._stack(db)

    def hold_stack(self) -> StackHold:
        return AdvisoryHold(self._pool)

    @staticmethod
    def _stack(db: psycopg.Connection) -> StackRecord:
        row = db.execute("SELECT * FROM stacks ORDER BY version DESC LIMIT 1").fetchone()
        return StackRecord(row["version"], tuple(json.loads(row["adapter_ids"])), row["created_at"])

    def _new_stack(self, db: psycopg.Connection, expected_version: int, adapter_ids: tuple[str, ...]) -> StackRecord:
        current = self._stack(db)
        if current.version != expected_version:
            raise LedgerError(f"stack moved: expected v{expected_version}, ledger has v{current.version}")
        now = time.time()
        db.execute("INSERT INTO stacks (version, adapter_ids, created_at) VALUES (%s, %s, %s)",
                   (current.version + 1, json.dumps(list(adapter_ids)), now))
        self._notify(db, f"stack:{current.version + 1}")
        return StackRecord(current.version + 1, adapter_ids, now)

    def activate(self, forget_id: str, expected_version: int) -> StackRecord:
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (STACK_LOCK,))  # one new version at a time
            job = self._job(db, forget_id)
            current = self._stack(db)
            if not job.adapter_id or job.adapter_id in current.adapter_ids:
                raise LedgerError(f"{forget_id} has no adapter to activate or it is already in the stack")
            stack = self._new_stack(db, expected_version, (*current.adapter_ids, job.adapter_id))
            db.execute("UPDATE adapters SET activated_at = %s WHERE adapter_id = %s", (stack.created_at, job.adapter_id))
            db.execute("UPDATE forgets SET stack_version = %s WHERE forget_id = %s", (stack.version, forget_id))
            self._set_state(db, forget_id, ForgetState.ACTIVE, f"stack v{stack.version}")
            self._erase_plaintext(db, forget_id)
            return stack

    def deactivate(self, adapter_id: str, expected_version: int, reason: str, actor: str) -> StackRecord:
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (STACK_LOCK,))
            current = self._stack(db)
            if adapter_id not in current.adapter_ids:
                raise LedgerError(f"adapter {adapter_id} is not in the active stack")
            stack = self._new_stack(db, expected_version, tuple(a for a in current.adapter_ids if a != adapter_id))
            row = db.execute("SELECT forget_id FROM adapters WHERE adapter_id = %s", (adapter_id,)).fetchone()
            self._set_state(db, row["forget_id"], ForgetState.DEACTIVATED, f"stack v{stack.version}")
            self._destroy_keys(db, row["forget_id"], PROBES)  # the probes only served the live adapter
            self._audit(db, actor, "deactivate_adapter", adapter_id,
                        {"forget_id": row["forget_id"], "stack_version": stack.version, "reason": reason})
            return stack

    def activated_at(self, adapter_id: str) -> float:
        with self._tx() as db:
            row = db.execute("SELECT activated_at FROM adapters WHERE adapter_id = %s", (adapter_id,)).fetchone()
        return float(row["activated_at"] or 0.0) if row else 0.0

    # ---- receipts ----------------------------------------------------------------------------
    def put_receipt(self, forget_id: str, kind: str, body: bytes, signature: bytes) -> tuple[bytes, bytes]:
        with self._tx() as db:  # ON CONFLICT waits for a racing replica's insert: the first one wins
            db.execute("INSERT INTO receipts (forget_id, kind, body, signature) VALUES (%s,%s,%s,%s) "
                       "ON CONFLICT (forget_id, kind) DO NOTHING", (forget_id, kind, body, signature))
            row = db.execute("SELECT body, signature FROM receipts WHERE forget_id = %s AND kind = %s",
                             (forget_id, kind)).fetchone()
        return bytes(row["body"]), bytes(row["signature"])

    def receipts(self, forget_id: str) -> dict[str, tuple[bytes, bytes]]:
        with self._tx() as db:
            rows = db.execute("SELECT kind, body, signature FROM receipts WHERE forget_id = %s",
                              (forget_id,)).fetchall()
        return {r["kind"]: (bytes(r["body"]), bytes(r["signature"])) for r in rows}

    # ---- guard hits --------------------------------------------------------------------------
    def add_guard_hits(self, counts: dict[tuple[str, str, str], int]) -> None:
        if not counts:
            return
        with self._tx() as db:
            with db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO guard_hits (forget_id, stage, phase, count) VALUES (%s,%s,%s,%s) "
                    "ON CONFLICT (forget_id, stage, phase) DO UPDATE SET count = guard_hits.count + excluded.count",
                    [(*key, n) for key, n in sorted(counts.items())])  # sorted: replicas lock rows in one order

    # ---- audit -----------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str, details: dict[str, object]) -> None:
        with self._tx() as db:
            self._audit(db, actor, action, target, details)

    @staticmethod
    def _audit(db: psycopg.Connection, actor: str, action: str, target: str, details: dict[str, object]) -> None:
        db.execute("INSERT INTO audit (at, actor, action, target, details) VALUES (%s,%s,%s,%s,%s)",
                   (time.time(), actor, action, target, json.dumps(details, sort_keys=True)))

    def audit_log(self, limit: int = 100) -> list[dict[str, object]]:
        with self._tx() as db:
            rows = db.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT %s", (limit,)).fetchall()
        return [{**r, "details": json.loads(r["details"])} for r in rows]

    # ---- other replicas --------------------------------------------------------------------
    def agree(self, name: str, value: str) -> str:
        with self._tx() as db:
            db.execute("INSERT INTO agreements (name, value, recorded_at) VALUES (%s, %s, %s) "
                       "ON CONFLICT (name) DO NOTHING", (name, value, time.time()))
            return db.execute("SELECT value FROM agreements WHERE name = %s", (name,)).fetchone()["value"]

    def blobs(self) -> BlobStore:
        return PostgresBlobs(self._tx)

    def listen(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        listener = Listener(self.url, on_change)
        listener.start()
        return listener.stop

    # ---- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _notify(db: psycopg.Connection, what: str) -> None:
        db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, what))  # delivered at commit, never before

    @classmethod
    def _erase_plaintext(cls, db: psycopg.Connection, forget_id: str) -> None:
        cls._destroy_keys(db, forget_id, PAYLOAD)
        # the entry ids point at the subject's corpus entries: they go with the plaintext
        db.execute("UPDATE resolutions SET entry_ids = '[]' WHERE forget_id = %s", (forget_id,))

    @staticmethod
    def _put_key(db: psycopg.Connection, forget_id: str, purpose: str, key: bytes) -> None:
        db.execute("INSERT INTO forget_keys (forget_id, purpose, key) VALUES (%s, %s, %s) ON CONFLICT "
                   "(forget_id, purpose) DO UPDATE SET key = excluded.key", (forget_id, purpose, key))

    @staticmethod
    def _destroy_keys(db: psycopg.Connection, forget_id: str, *purposes: str) -> None:
        """Crypto-shred: the key row goes, and the ciphertext it opened (noise from now on, in the
        WAL, on standbys and in backups alike)."""
        for purpose in purposes:
            db.execute("DELETE FROM forget_keys WHERE forget_id = %s AND purpose = %s", (forget_id, purpose))
            db.execute(f"DELETE FROM {'payloads' if purpose == PAYLOAD else 'probes'} WHERE forget_id = %s",
                       (forget_id,))

    @staticmethod
    def _set_counters(db: psycopg.Connection, forget_id: str, attempts: int | None,
                      metrics: dict[str, float] | None) -> None:
        if attempts is not None:
            db.execute("UPDATE forgets SET attempts = %s WHERE forget_id = %s", (attempts, forget_id))
        if metrics is not None:
            db.execute("UPDATE forgets SET metrics = %s WHERE forget_id = %s", (json.dumps(metrics), forget_id))

    def _set_state(self, db: psycopg.Connection, forget_id: str, state: ForgetState, detail: str = "") -> None:
        now = time.time()
        cur = db.execute("UPDATE forgets SET state = %s, updated_at = %s WHERE forget_id = %s",
                         (state.value, now, forget_id))
        if cur.rowcount == 0:
            raise UnknownForget(forget_id)
        self._log_transition(db, forget_id, state, now, detail)

    @staticmethod
    def _log_transition(db: psycopg.Connection, forget_id: str, state: ForgetState, at: float,
                        detail: str = "") -> None:
        db.execute("INSERT INTO transitions (forget_id, state, at, detail) VALUES (%s,%s,%s,%s)",
                   (forget_id, state.value, at, detail))

    @staticmethod
    def _job(db: psycopg.Connection, forget_id: str) -> ForgetJob:
        r = db.execute("SELECT * FROM forgets WHERE forget_id = %s", (forget_id,)).fetchone()
        if r is None:
            raise UnknownForget(forget_id)
        transitions = db.execute("SELECT state, at, detail FROM transitions WHERE forget_id = %s ORDER BY seq",
                                 (forget_id,)).fetchall()
        hits = db.execute("SELECT stage, phase, count FROM guard_hits WHERE forget_id = %s ORDER BY stage, phase",
                          (forget_id,)).fetchall()
        res = db.execute("SELECT * FROM resolutions WHERE forget_id = %s", (forget_id,)).fetchone()
        return job_from_rows(r, transitions, hits, res)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(info.items()))

"""SQLite ledger: WAL journal, synchronous=FULL, secure_delete on, one file in the data dir.

The server and the worker process each open their own connection; SQLite's locking serialises
writers across processes and a lock serialises threads within one. Plaintext is never written:
the payload and the probes are sealed under per-forget keys (sealing.py) kept in `forget_keys`.
Erasure deletes the key and the ciphertext rows with secure_delete (freed pages are zeroed) and
then truncates the WAL, so neither lingers on disk in either file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import logging
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from server.forget.jobs import (AdapterRecord, ForgetJob, ForgetPayload, ForgetResolution, ForgetState, JobProgress,
                                StackRecord)
from server.forget.ledger.base import ForgetLedger, IdempotencyConflict, LedgerError, NotOwner, UnknownForget
from server.forget.ledger.rows import adapter_from_row, job_from_rows, match_counts, submit_audit
from server.forget.sealing import PAYLOAD, PROBES, Shredded, open_payload, open_sealed, seal, seal_payload

SCHEMA = """
CREATE TABLE IF NOT EXISTS forgets (
  forget_id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, state TEXT NOT NULL, method TEXT NOT NULL,
  reason TEXT NOT NULL, num_texts INTEGER NOT NULL, num_qa INTEGER NOT NULL, num_subjects INTEGER NOT NULL,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, failure_reason TEXT NOT NULL DEFAULT '',
  adapter_id TEXT NOT NULL DEFAULT '', stack_version INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0, metrics TEXT NOT NULL DEFAULT '{}', worker_id TEXT,
  guard_entries BLOB, content_hmac TEXT NOT NULL DEFAULT '', claim_epoch INTEGER NOT NULL DEFAULT 0,
  commitment TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS payloads (forget_id TEXT PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS forget_keys (forget_id TEXT NOT NULL, purpose TEXT NOT NULL, key BLOB NOT NULL,
  PRIMARY KEY (forget_id, purpose));
CREATE TABLE IF NOT EXISTS transitions (forget_id TEXT NOT NULL, state TEXT NOT NULL, at REAL NOT NULL,
  detail TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS transitions_by_job ON transitions (forget_id);
CREATE TABLE IF NOT EXISTS progress (seq INTEGER PRIMARY KEY AUTOINCREMENT, forget_id TEXT NOT NULL,
  data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS progress_by_job ON progress (forget_id, seq);
CREATE TABLE IF NOT EXISTS adapters (adapter_id TEXT PRIMARY KEY, forget_id TEXT NOT NULL, path TEXT NOT NULL,
  sha256 TEXT NOT NULL, method TEXT NOT NULL, rank INTEGER NOT NULL, size_bytes INTEGER NOT NULL,
  created_at REAL NOT NULL, metrics TEXT NOT NULL, activated_at REAL);
CREATE TABLE IF NOT EXISTS stacks (version INTEGER PRIMARY KEY, adapter_ids TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, target TEXT NOT NULL, details TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (worker_id TEXT PRIMARY KEY, heartbeat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS probes (forget_id TEXT PRIMARY KEY, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS guard_hits (forget_id TEXT NOT NULL, stage TEXT NOT NULL, phase TEXT NOT NULL,
  count INTEGER NOT NULL, PRIMARY KEY (forget_id, stage, phase));
CREATE TABLE IF NOT EXISTS receipts (forget_id TEXT NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL,
  signature BLOB NOT NULL, PRIMARY KEY (forget_id, kind));
CREATE TABLE IF NOT EXISTS resolutions (forget_id TEXT PRIMARY KEY, corpus_digest TEXT NOT NULL,
  counts TEXT NOT NULL, entry_ids TEXT NOT NULL);
"""


_CHECKPOINT_TRIES = 3
logger = logging.getLogger(__name__)


def new_forget_id() -> str:
    # Time-ordered (ms, hex) plus randomness: sortable, unguessable, never reused.
    return f"fg_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


class SqliteLedger(ForgetLedger):
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "secure_delete=ON", "foreign_keys=ON"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript(SCHEMA)
        self._drop_unkeyed_digests()
        self._add_columns()
        self._seal_legacy_payloads()
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO stacks (version, adapter_ids, created_at) VALUES (0, '[]', ?)",
                       (time.time(),))

    def _drop_unkeyed_digests(self) -> None:
        """Ledgers written before keyed digests kept a plain SHA-256 of each request's content (in
        `forgets` and the audit log): a one-name forget could be recovered by hashing a list of
        names. Erase them; those requests' idempotency keys then match any content."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(forgets)")}
        if "content_sha256" not in columns:
            return
        with self._tx() as db:
            db.execute("ALTER TABLE forgets RENAME COLUMN content_sha256 TO content_hmac")
            db.execute("UPDATE forgets SET content_hmac = ''")
            db.execute("UPDATE audit SET details = json_remove(details, '$.content_sha256') "
                       "WHERE json_extract(details, '$.content_sha256') IS NOT NULL")
        self._db.execute("VACUUM")  # rewrite every page: no old value survives in free space
        self._truncate_wal()

    def _add_columns(self) -> None:
        """Ledgers written before claim epochs and receipts: the columns, with their defaults (an old
        job's next claim is epoch 1; its receipt commits to no request)."""
        have = {r["name"] for r in self._db.execute("PRAGMA table_info(forgets)")}
        for column, decl in (("claim_epoch", "INTEGER NOT NULL DEFAULT 0"), ("commitment", "TEXT NOT NULL DEFAULT ''")):
            if column not in have:
                self._db.execute(f"ALTER TABLE forgets ADD COLUMN {column} {decl}")

    def _seal_legacy_payloads(self) -> None:
        """Ledgers written before sealing kept in-flight payloads as plaintext JSON (rows with no
        key): seal them in place, then rewrite every page so the plaintext leaves free space."""
        rows = self._db.execute("SELECT p.forget_id, p.payload FROM payloads p WHERE NOT EXISTS (SELECT 1 "
                                "FROM forget_keys k WHERE k.forget_id = p.forget_id AND k.purpose = ?)",
                                (PAYLOAD,)).fetchall()
        if not rows:
            return
        with self._tx() as db:
            for r in rows:
                key, sealed = seal_payload(ForgetPayload.from_json(r["payload"]))
                db.execute("UPDATE payloads SET payload = ? WHERE forget_id = ?", (sealed, r["forget_id"]))
                self._put_key(db, r["forget_id"], PAYLOAD, key)
        self._db.execute("VACUUM")
        self._truncate_wal()

    @staticmethod
    def _put_key(db: sqlite3.Connection, forget_id: str, purpose: str, key: bytes) -> None:
        db.execute("INSERT OR REPLACE INTO forget_keys (forget_id, purpose, key) VALUES (?,?,?)",
                   (forget_id, purpose, key))

    @staticmethod
    def _destroy_keys(db: sqlite3.Connection, forget_id: str, *purposes: str) -> None:
        """Crypto-shred: the key row goes (zeroed by secure_delete; the caller truncates the WAL),
        and so does the ciphertext it opened, which is noise from now on."""
        for purpose in purposes:
            db.execute("DELETE FROM forget_keys WHERE forget_id = ? AND purpose = ?", (forget_id, purpose))
            table = "payloads" if purpose == PAYLOAD else "probes"
            db.execute(f"DELETE FROM {table} WHERE forget_id = ?", (forget_id,))

    # The payload with its key; a job whose key is gone has no payload (inner join).
    _PAYLOADS = ("SELECT f.forget_id, p.payload, k.key FROM forgets f JOIN payloads p USING (forget_id) "
                 f"JOIN forget_keys k ON k.forget_id = f.forget_id AND k.purpose = '{PAYLOAD}' ")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- forget requests -------------------------------------------------------------------
    def submit(self, payload: ForgetPayload, method: str, reason: str, idempotency_key: str | None,
               actor: str, content_digest: str = "", commitment: str = "") -> tuple[ForgetJob, bool]:
        now = time.time()
        with self._tx() as db:
            if idempotency_key:
                row = db.execute("SELECT forget_id, content_hmac FROM forgets WHERE idempotency_key = ?",
                                 (idempotency_key,)).fetchone()
                if row is not None:
                    known = row["content_hmac"]
                    if known and content_digest and not hmac.compare_digest(known, content_digest):
                        raise IdempotencyConflict(f"idempotency key of {row['forget_id']} reused with other content")
                    return self._job(db, row["forget_id"]), False
            fid = new_forget_id()
            db.execute(
                "INSERT INTO forgets (forget_id, idempotency_key, state, method, reason, num_texts, num_qa, "
                "num_subjects, created_at, updated_at, content_hmac, commitment) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (fid, idempotency_key or None, ForgetState.PENDING.value, method, reason, len(payload.texts),
                 len(payload.qa_pairs), len(payload.subjects), now, now, content_digest, commitment))
            key, sealed = seal_payload(payload)
            db.execute("INSERT INTO payloads (forget_id, payload) VALUES (?, ?)", (fid, sealed))
            self._put_key(db, fid, PAYLOAD, key)
            self._log_transition(db, fid, ForgetState.PENDING, now)
            self._audit(db, actor, "forget", fid, submit_audit(payload, method, content_digest))
            return self._job(db, fid), True

    def arm(self, forget_id: str, guard_entries: bytes, resolution: ForgetResolution | None = None) -> ForgetJob:
        with self._tx() as db:
            db.execute("UPDATE forgets SET guard_entries = ? WHERE forget_id = ?", (guard_entries, forget_id))
            if resolution is not None:
                c = resolution.counts
                db.execute("INSERT OR REPLACE INTO resolutions (forget_id, corpus_digest, counts, entry_ids) "
                           "VALUES (?,?,?,?)", (forget_id, c.corpus_digest,
                                                json.dumps([c.texts, c.qa_pairs, c.subjects]),
                                                json.dumps(list(resolution.entry_ids))))
            self._set_state(db, forget_id, ForgetState.FILTERING, "guard armed")
            return self._job(db, forget_id)

    def guard_entries(self) -> list[tuple[str, bytes, ForgetState]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT forget_id, guard_entries, state FROM forgets WHERE guard_entries IS NOT NULL ORDER BY rowid"
            ).fetchall()
        return [(r["forget_id"], bytes(r["guard_entries"]), ForgetState(r["state"])) for r in rows]

    def pending_payloads(self) -> list[tuple[str, ForgetPayload]]:
        with self._lock:
            rows = self._db.execute(self._PAYLOADS + "WHERE f.state = ? ORDER BY f.rowid",
                                    (ForgetState.PENDING.value,)).fetchall()
        return [(r["forget_id"], open_payload(r["key"], r["payload"])) for r in rows]

    def armed_payloads(self) -> list[tuple[str, ForgetPayload]]:
        with self._lock:
            rows = self._db.execute(self._PAYLOADS + "WHERE f.state != ? ORDER BY f.rowid",
                                    (ForgetState.PENDING.value,)).fetchall()
        return [(r["forget_id"], open_payload(r["key"], r["payload"])) for r in rows]

    def resolution(self, forget_id: str) -> ForgetResolution | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM resolutions WHERE forget_id = ?", (forget_id,)).fetchone()
        return None if row is None else ForgetResolution(match_counts(row), tuple(json.loads(row["entry_ids"])))

    def update_guard_entries(self, forget_id: str, guard_entries: bytes) -> None:
        with self._tx() as db:
            db.execute("UPDATE forgets SET guard_entries = ? WHERE forget_id = ?", (guard_entries, forget_id))

    def get(self, forget_id: str) -> ForgetJob:
        with self._lock:
            return self._job(self._db, forget_id)

    def list(self, states: Sequence[ForgetState] = (), limit: int = 50, before: str | None = None) -> list[ForgetJob]:
        sql, args = "SELECT forget_id FROM forgets WHERE 1=1", []
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += [s.value for s in states]
        if before:
            sql += " AND rowid < (SELECT rowid FROM forgets WHERE forget_id = ?)"
            args.append(before)
        sql += " ORDER BY rowid DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            ids = [r["forget_id"] for r in self._db.execute(sql, args).fetchall()]
            return [self._job(self._db, fid) for fid in ids]

    def counts_by_state(self) -> dict[ForgetState, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) AS n FROM forgets GROUP BY state").fetchall()
        counts = {s: 0 for s in ForgetState}
        counts.update({ForgetState(r["state"]): r["n"] for r in rows})
        return counts

    # ---- the worker ------------------------------------------------------------------------
    def claim_next(self, worker_id: str) -> tuple[ForgetJob, ForgetPayload] | None:
        with self._tx() as db:
            row = db.execute(self._PAYLOADS + "WHERE f.state = ? ORDER BY f.rowid LIMIT 1",
                             (ForgetState.FILTERING.value,)).fetchone()
            if row is None:
                return None
            fid = row["forget_id"]
            db.execute("UPDATE forgets SET worker_id = ?, claim_epoch = claim_epoch + 1 WHERE forget_id = ?",
                       (worker_id, fid))
            self._set_state(db, fid, ForgetState.TRAINING)
            self._beat(db, worker_id)
            return self._job(db, fid), open_payload(row["key"], row["payload"])

    def heartbeat(self, worker_id: str) -> None:
        with self._tx() as db:
            self._beat(db, worker_id)

    @staticmethod
    def _beat(db: sqlite3.Connection, worker_id: str) -> None:
        db.execute("INSERT INTO workers (worker_id, heartbeat) VALUES (?, ?) "
                   "ON CONFLICT (worker_id) DO UPDATE SET heartbeat = excluded.heartbeat", (worker_id, time.time()))

    def last_heartbeat(self, excluding: str | None = None) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MAX(heartbeat) AS h FROM workers WHERE worker_id IS NOT ?",
                                   (excluding,)).fetchone()
        return row["h"]

    def requeue_orphans(self, older_than: float) -> list[str]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT f.forget_id FROM forgets f LEFT JOIN workers w USING (worker_id) "
                "WHERE f.state IN (?, ?) AND f.adapter_id = '' AND (w.heartbeat IS NULL OR w.heartbeat < ?)",
                (ForgetState.TRAINING.value, ForgetState.VERIFYING.value, older_than)).fetchall()
            for r in rows:
                self._set_state(db, r["forget_id"], ForgetState.FILTERING, "requeued: worker stopped")
            return [r["forget_id"] for r in rows]

    def record_progress(self, forget_id: str, progress: JobProgress, worker_id: str | None = None,
                        epoch: int | None = None) -> None:
        data = json.dumps(dataclasses.asdict(progress))  # every field: counts, losses, metrics, timing
        with self._tx() as db:
            self._check_owner(db, forget_id, worker_id, epoch)  # a presumed-dead worker reports nothing more
            db.execute("INSERT INTO progress (forget_id, data) VALUES (?, ?)", (forget_id, data))
            if worker_id is not None:
                self._beat(db, worker_id)  # the writer's own heartbeat, never the current owner's

    def progress_after(self, forget_id: str, seq: int) -> list[tuple[int, JobProgress]]:
        with self._lock:
            rows = self._db.execute("SELECT seq, data FROM progress WHERE forget_id = ? AND seq > ? ORDER BY seq",
                                    (forget_id, seq)).fetchall()
        return [(r["seq"], JobProgress(**json.loads(r["data"]))) for r in rows]

    def transition(self, forget_id: str, state: ForgetState, detail: str = "", attempts: int | None = None,
                   metrics: dict[str, float] | None = None, worker_id: str | None = None,
                   epoch: int | None = None) -> ForgetJob:
        with self._tx() as db:
            self._check_owner(db, forget_id, worker_id, epoch)
            if attempts is not None:
                db.execute("UPDATE forgets SET attempts = ? WHERE forget_id = ?", (attempts, forget_id))
            if metrics is not None:
                db.execute("UPDATE forgets SET metrics = ? WHERE forget_id = ?", (json.dumps(metrics), forget_id))
            self._set_state(db, forget_id, state, detail)
            return self._job(db, forget_id)

    def record_adapter(self, adapter: AdapterRecord, attempts: int | None = None, probes: bytes = b"",
                       worker_id: str | None = None, epoch: int | None = None) -> ForgetJob:
        with self._tx() as db:
            self._check_owner(db, adapter.forget_id, worker_id, epoch)
            db.execute(
                "INSERT INTO adapters (adapter_id, forget_id, path, sha256, method, rank, size_bytes, created_at, "
                "metrics) VALUES (?,?,?,?,?,?,?,?,?)",
                (adapter.adapter_id, adapter.forget_id, adapter.path, adapter.sha256, adapter.method, adapter.rank,
                 adapter.size_bytes, adapter.created_at, json.dumps(adapter.metrics)))
            db.execute("UPDATE forgets SET adapter_id = ?, metrics = ?, updated_at = ? WHERE forget_id = ?",
                       (adapter.adapter_id, json.dumps(adapter.metrics), time.time(), adapter.forget_id))
            if attempts is not None:
                db.execute("UPDATE forgets SET attempts = ? WHERE forget_id = ?", (attempts, adapter.forget_id))
            if probes:
                key, sealed = seal(PROBES, probes)
                db.execute("INSERT OR REPLACE INTO probes (forget_id, sealed) VALUES (?, ?)", (adapter.forget_id, sealed))
                self._put_key(db, adapter.forget_id, PROBES, key)
            return self._job(db, adapter.forget_id)

    @staticmethod
    def _check_owner(db: sqlite3.Connection, forget_id: str, worker_id: str | None, epoch: int | None) -> None:
        if worker_id is None:
            return
        row = db.execute("SELECT state, worker_id, claim_epoch FROM forgets WHERE forget_id = ?",
                         (forget_id,)).fetchone()
        if row is None:
            raise UnknownForget(forget_id)
        working = (ForgetState.TRAINING.value, ForgetState.VERIFYING.value)
        if row["worker_id"] != worker_id or row["state"] not in working:
            raise NotOwner(f"{forget_id} is {row['state']} and owned by another worker")
        if epoch is not None and row["claim_epoch"] != epoch:
            raise NotOwner(f"{forget_id} was claimed again (epoch {row['claim_epoch']}, this write is of {epoch})")

    def monitor_probes(self) -> list[tuple[str, str, bytes]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT f.forget_id, f.method, p.sealed, k.key FROM forgets f JOIN probes p USING (forget_id) "
                "JOIN forget_keys k ON k.forget_id = f.forget_id AND k.purpose = ? WHERE f.state = ? ORDER BY f.rowid",
                (PROBES, ForgetState.ACTIVE.value)).fetchall()
        out = []
        for r in rows:
            try:
                out.append((r["forget_id"], r["method"], open_sealed(PROBES, r["key"], r["sealed"])))
            except Shredded:
                logger.warning("leakage probes of %s cannot be opened; skipping them", r["forget_id"])
        return out

    def fail(self, forget_id: str, reason: str, metrics: dict[str, float] | None = None,
             attempts: int | None = None, worker_id: str | None = None, epoch: int | None = None) -> ForgetJob:
        with self._tx() as db:
            self._check_owner(db, forget_id, worker_id, epoch)
            db.execute("UPDATE forgets SET failure_reason = ? WHERE forget_id = ?", (reason, forget_id))
            if metrics is not None:
                db.execute("UPDATE forgets SET metrics = ? WHERE forget_id = ?", (json.dumps(metrics), forget_id))
            if attempts is not None:
                db.execute("UPDATE forgets SET attempts = ? WHERE forget_id = ?", (attempts, forget_id))
            self._set_state(db, forget_id, ForgetState.FAILED, reason)
            self._destroy_keys(db, forget_id, PAYLOAD, PROBES)  # no adapter to monitor either
            # the entry ids point at the subject's corpus entries: they go with the plaintext
            db.execute("UPDATE resolutions SET entry_ids = '[]' WHERE forget_id = ?", (forget_id,))
            job = self._job(db, forget_id)
        self._truncate_wal()
        return job

    # ---- the adapter stack -----------------------------------------------------------------
    def adapter(self, adapter_id: str) -> AdapterRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM adapters WHERE adapter_id = ?", (adapter_id,)).fetchone()
        if row is None:
            raise LedgerError(f"unknown adapter {adapter_id}")
        return adapter_from_row(row)

    def awaiting_swap(self) -> list[ForgetJob]:
        with self._lock:
            ids = [r["forget_id"] for r in self._db.execute(
                "SELECT forget_id FROM forgets WHERE state = ? AND adapter_id != '' ORDER BY rowid",
                (ForgetState.VERIFYING.value,)).fetchall()]
            return [self._job(self._db, fid) for fid in ids]

    def current_stack(self) -> StackRecord:
        with self._lock:
            return self._stack(self._db)

    @staticmethod
    def _stack(db: sqlite3.Connection) -> StackRecord:
        row = db.execute("SELECT * FROM stacks ORDER BY version DESC LIMIT 1").fetchone()
        return StackRecord(row["version"], tuple(json.loads(row["adapter_ids"])), row["created_at"])

    def _new_stack(self, db: sqlite3.Connection, expected_version: int, adapter_ids: tuple[str, ...]) -> StackRecord:
        current = self._stack(db)
        if current.version != expected_version:
            raise LedgerError(f"stack moved: expected v{expected_version}, ledger has v{current.version}")
        now = time.time()
        db.execute("INSERT INTO stacks (version, adapter_ids, created_at) VALUES (?, ?, ?)",
                   (current.version + 1, json.dumps(list(adapter_ids)), now))
        return StackRecord(current.version + 1, adapter_ids, now)

    def activate(self, forget_id: str, expected_version: int) -> StackRecord:
        with self._tx() as db:
            job = self._job(db, forget_id)
            current = self._stack(db)
            if not job.adapter_id or job.adapter_id in current.adapter_ids:
                raise LedgerError(f"{forget_id} has no adapter to activate or it is already in the stack")
            stack = self._new_stack(db, expected_version, (*current.adapter_ids, job.adapter_id))
            db.execute("UPDATE adapters SET activated_at = ? WHERE adapter_id = ?", (stack.created_at, job.adapter_id))
            db.execute("UPDATE forgets SET stack_version = ? WHERE forget_id = ?", (stack.version, forget_id))
            self._set_state(db, forget_id, ForgetState.ACTIVE, f"stack v{stack.version}")
            self._destroy_keys(db, forget_id, PAYLOAD)
            # the entry ids point at the subject's corpus entries: they go with the plaintext
            db.execute("UPDATE resolutions SET entry_ids = '[]' WHERE forget_id = ?", (forget_id,))
        self._truncate_wal()
        return stack

    def deactivate(self, adapter_id: str, expected_version: int, reason: str, actor: str) -> StackRecord:
        with self._tx() as db:
            current = self._stack(db)
            if adapter_id not in current.adapter_ids:
                raise LedgerError(f"adapter {adapter_id} is not in the active stack")
            stack = self._new_stack(db, expected_version, tuple(a for a in current.adapter_ids if a != adapter_id))
            row = db.execute("SELECT forget_id FROM adapters WHERE adapter_id = ?", (adapter_id,)).fetchone()
            self._set_state(db, row["forget_id"], ForgetState.DEACTIVATED, f"stack v{stack.version}")
            # The leakage probes (forgotten questions, sealed) only served the live adapter.
            self._destroy_keys(db, row["forget_id"], PROBES)
            self._audit(db, actor, "deactivate_adapter", adapter_id,
                        {"forget_id": row["forget_id"], "stack_version": stack.version, "reason": reason})
        self._truncate_wal()
        return stack

    def activated_at(self, adapter_id: str) -> float:
        with self._lock:
            row = self._db.execute("SELECT activated_at FROM adapters WHERE adapter_id = ?", (adapter_id,)).fetchone()
        return float(row["activated_at"] or 0.0) if row else 0.0

    # ---- receipts ----------------------------------------------------------------------------
    def put_receipt(self, forget_id: str, kind: str, body: bytes, signature: bytes) -> tuple[bytes, bytes]:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO receipts (forget_id, kind, body, signature) VALUES (?,?,?,?)",
                       (forget_id, kind, body, signature))
            row = db.execute("SELECT body, signature FROM receipts WHERE forget_id = ? AND kind = ?",
                             (forget_id, kind)).fetchone()
        return bytes(row["body"]), bytes(row["signature"])

    def receipts(self, forget_id: str) -> dict[str, tuple[bytes, bytes]]:
        with self._lock:
            rows = self._db.execute("SELECT kind, body, signature FROM receipts WHERE forget_id = ?",
                                    (forget_id,)).fetchall()
        return {r["kind"]: (bytes(r["body"]), bytes(r["signature"])) for r in rows}

    # ---- guard hits --------------------------------------------------------------------------
    def add_guard_hits(self, counts: dict[tuple[str, str, str], int]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO guard_hits (forget_id, stage, phase, count) VALUES (?,?,?,?) "
                "ON CONFLICT (forget_id, stage, phase) DO UPDATE SET count = count + excluded.count",
                [(*key, n) for key, n in counts.items()])

    # ---- audit -----------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str, details: dict[str, object]) -> None:
        with self._tx() as db:
            self._audit(db, actor, action, target, details)

    @staticmethod
    def _audit(db: sqlite3.Connection, actor: str, action: str, target: str, details: dict[str, object]) -> None:
        db.execute("INSERT INTO audit (at, actor, action, target, details) VALUES (?,?,?,?,?)",
                   (time.time(), actor, action, target, json.dumps(details, sort_keys=True)))

    def audit_log(self, limit: int = 100) -> list[dict[str, object]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    # ---- helpers ---------------------------------------------------------------------------
    def _set_state(self, db: sqlite3.Connection, forget_id: str, state: ForgetState, detail: str = "") -> None:
        now = time.time()
        cur = db.execute("UPDATE forgets SET state = ?, updated_at = ? WHERE forget_id = ?",
                         (state.value, now, forget_id))
        if cur.rowcount == 0:
            raise UnknownForget(forget_id)
        self._log_transition(db, forget_id, state, now, detail)

    @staticmethod
    def _log_transition(db: sqlite3.Connection, forget_id: str, state: ForgetState, at: float, detail: str = "") -> None:
        db.execute("INSERT INTO transitions (forget_id, state, at, detail) VALUES (?,?,?,?)",
                   (forget_id, state.value, at, detail))

    @staticmethod
    def _job(db: sqlite3.Connection, forget_id: str) -> ForgetJob:
        r = db.execute("SELECT * FROM forgets WHERE forget_id = ?", (forget_id,)).fetchone()
        if r is None:
            raise UnknownForget(forget_id)
        transitions = db.execute("SELECT state, at, detail FROM transitions WHERE forget_id = ? ORDER BY rowid",
                                 (forget_id,)).fetchall()
        hits = db.execute("SELECT stage, phase, count FROM guard_hits WHERE forget_id = ? ORDER BY stage, phase",
                          (forget_id,)).fetchall()
        res = db.execute("SELECT * FROM resolutions WHERE forget_id = ?", (forget_id,)).fetchone()
        return job_from_rows(r, transitions, hits, res)

    def _truncate_wal(self) -> None:
        # Move committed pages (with the erased rows already zeroed) into the main file and cut the
        # WAL to zero bytes, so deleted plaintext does not survive in old WAL frames.
        # A reader on an older snapshot (another process) makes the checkpoint give up ("busy"):
        # retry, and say so if the WAL could not be cut, instead of assuming it was.
        for attempt in range(_CHECKPOINT_TRIES):
            with self._lock:
                busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.05 * (attempt + 1))
        logger.warning("the WAL checkpoint stayed busy after %d tries; erased rows may linger in %s-wal "
                       "until the next checkpoint", _CHECKPOINT_TRIES, self.path.name)

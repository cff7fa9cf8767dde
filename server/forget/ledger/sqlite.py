"""SQLite ledger: WAL journal, synchronous=FULL, secure_delete on, one file in the data dir.

The server and the worker process each open their own connection; SQLite's locking serialises
writers across processes (every write transaction is BEGIN IMMEDIATE) and a lock serialises
threads within one. What is SQLite's own lives here: the schema and its in-place upgrades of old
ledgers, the connection, and scrubbing the WAL after an erasure. The queries themselves are
shared with PostgreSQL (sql_common.py). Plaintext is never written: the payload and the probes
are sealed under per-forget keys (sealing.py) kept in `forget_keys`. Erasure deletes the key and
the ciphertext rows with secure_delete (freed pages are zeroed) and then truncates the WAL, so
neither lingers on disk in either file.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

from server.forget.jobs import ForgetPayload
from server.forget.ledger.sql_common import Dialect, SqlLedger
from server.forget.sealing import PAYLOAD, seal_payload

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


class SqliteLedger(SqlLedger):
    # BEGIN IMMEDIATE takes the database's write lock: no row locks to add, and one stack
    # version at a time with no lock of its own (`_lock_stack` stays a no-op).
    dialect = Dialect(placeholder="?", seq="rowid")

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
        with self._write() as db:
            for r in rows:
                key, sealed = seal_payload(ForgetPayload.from_json(r["payload"]))
                db.execute("UPDATE payloads SET payload = ? WHERE forget_id = ?", (sealed, r["forget_id"]))
                self._put_key(db, r["forget_id"], PAYLOAD, key)
        self._db.execute("VACUUM")
        self._truncate_wal()


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

    @contextlib.contextmanager
    def _view(self) -> Iterator[sqlite3.Connection]:
        with self._lock:  # autocommit reads: each statement sees the last commit
            yield self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _scrub(self) -> None:
        self._truncate_wal()

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

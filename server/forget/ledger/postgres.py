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
whose key is gone. The schema and its migrations live in pg_schema.py; the queries both ledgers
share in sql_common.py. What lives here is only PostgreSQL's: the pool, its row and advisory
locks, NOTIFY, and what replicas share beyond the ledger (agreements, blobs, the stack turn).
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterable, Iterator, Sequence

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from server.forget.ledger.base import BlobStore, LedgerUnavailable, StackHold
from server.forget.ledger.pg_blobs import PostgresBlobs, put_blobs
from server.forget.ledger.pg_coordination import CHANNEL, UNAVAILABLE, AdvisoryHold, Listener, keep_alive
from server.forget.ledger.pg_schema import STACK_LOCK, migrate
from server.forget.ledger.sql_common import Dialect, Sql, SqlLedger

class PostgresLedger(SqlLedger):
    # SKIP LOCKED: a job another worker is claiming right now is passed over, not waited on.
    # FOR UPDATE on the owner check: a worker's write and a requeue or claim of its job wait for
    # each other, so the write never lands on a job that is no longer its own.
    dialect = Dialect(placeholder="%s", seq="seq", skip_locked=" FOR UPDATE OF f SKIP LOCKED",
                      for_update=" FOR UPDATE")

    def __init__(self, url: str, pool_size: int = 4, timeout_seconds: float = 5.0):
        self.url = url
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, timeout=timeout_seconds, open=False,
                                    kwargs={"row_factory": dict_row}, name="lethe-ledger",
                                    configure=keep_alive,  # a vanished replica's locks are let go
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

    def _view(self) -> contextlib.AbstractContextManager[psycopg.Connection]:
        return self._tx()  # a read is a transaction too: one snapshot, and the same error edge

    def close(self) -> None:
        self._pool.close()

    # ---- PostgreSQL's hooks ------------------------------------------------------------------
    def _notify(self, db: Sql, what: str) -> None:
        db.execute("SELECT pg_notify(?, ?)", (CHANNEL, what))  # delivered at commit, never before

    def _lock_stack(self, db: Sql) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (STACK_LOCK,))

    def _put_blobs(self, db: Sql, blobs: Sequence[tuple[str, Iterable[bytes]]]) -> None:
        put_blobs(db.conn, blobs)

    def hold_stack(self) -> StackHold:
        return AdvisoryHold(self._pool)

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


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(info.items()))

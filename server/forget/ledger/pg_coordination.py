"""What replicas sharing a PostgreSQL ledger use to coordinate, beside its tables: the stack
turn (a session-level advisory lock held across one replica's swap), change notifications
(LISTEN on a connection of its own), and the keepalive every pooled session asks for so that
locks held by a machine that vanished are let go. Used by postgres.py; holds no ledger queries.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from server.forget.ledger.base import LedgerUnavailable, StackHold
from server.forget.ledger.pg_schema import STACK_TURN

logger = logging.getLogger(__name__)

CHANNEL = "lethe_ledger"
UNAVAILABLE = "the shared ledger (PostgreSQL) is unreachable; nothing was recorded: retry when it is back"
# A process killed closes its sockets and PostgreSQL ends its session at once; a machine that
# vanishes does not, and its idle session (holding the stack turn, or a job's row lock) lives
# until TCP keepalive gives up on it: over two hours with the OS defaults, during which no
# replica can change the stack. Probing after 10 s idle, every 5 s, 3 misses: ~25 s.
KEEPALIVE = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 3}


def keep_alive(conn: psycopg.Connection) -> None:
    """Pool `configure` hook: ask PostgreSQL to probe this session's peer (ignored on a unix
    socket, where a dead peer is seen at once)."""
    for name, value in KEEPALIVE.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
    conn.commit()


class AdvisoryHold(StackHold):
    """A session-level advisory lock on one pooled connection, held across a replica's local
    swap: no other replica commits a stack version meanwhile, so a version number this replica
    builds is never given other adapters by someone else. Dies with the session if we do."""

    def __init__(self, pool: ConnectionPool):
        self._pool = pool
        try:
            self._conn = pool.getconn()
            self._conn.autocommit = True
            self._conn.execute("SELECT pg_advisory_lock(%s)", (STACK_TURN,))
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise LedgerUnavailable(UNAVAILABLE) from exc

    def release(self) -> None:
        try:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (STACK_TURN,))
        except psycopg.Error:
            logger.warning("could not release the stack lock; it goes with the connection")
        finally:
            self._conn.autocommit = False
            self._pool.putconn(self._conn)


class Listener:
    """LISTEN on CHANNEL over a connection of its own, in a daemon thread; reconnects with
    back-off. After every (re)connect it reports "connected": notifications sent while it was
    away are lost, so the caller reconciles in full."""

    def __init__(self, url: str, on_change: Callable[[str], None]):
        self._url = url
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.5
                    self._on_change("connected")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._on_change(note.payload)
            except psycopg.Error as exc:
                logger.warning("ledger notifications lost (%s); reconnecting in %.1f s", type(exc).__name__, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

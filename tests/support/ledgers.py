"""Ledger backends for tests that must hold on SQLite and PostgreSQL alike.

`open()` gives a new ledger on the same store (another process's view); `stored(data)` says
whether bytes are still in the store: SQLite's files on disk (database, WAL, shared memory), or
every row of the PostgreSQL database as a backup (pg_dump) would keep it. PostgreSQL's own WAL
is not checked: deleted rows stay there until recycled, which is why forgotten plaintext must
reach it sealed (issue 16), not why a row must be deleted.
`to_verifying` brings a new job to where the ledger tests start: claimed, VERIFYING.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from server.forget.jobs import ForgetPayload, ForgetState
from server.forget.ledger import ForgetLedger, SqliteLedger


@dataclass
class LedgerBackend:
    name: str
    _open: Callable[[], ForgetLedger]
    stored: Callable[[bytes], bool]
    _opened: list[ForgetLedger] = field(default_factory=list)

    def open(self) -> ForgetLedger:
        ledger = self._open()
        self._opened.append(ledger)
        return ledger

    def close_all(self) -> None:
        for ledger in self._opened:
            try:
                ledger.close()
            except Exception:  # already closed by the test
                pass

    @classmethod
    def sqlite(cls, path: Path) -> LedgerBackend:
        def stored(data: bytes) -> bool:
            return any(data in f.read_bytes() for f in path.parent.iterdir()
                       if f.is_file() and f.name.startswith(path.name))
        return cls("sqlite", lambda: SqliteLedger(path), stored)

    @classmethod
    def postgres(cls, cluster: Any, url: str) -> LedgerBackend:
        from server.forget.ledger.postgres import PostgresLedger

        def stored(data: bytes) -> bool:
            dump = cluster.dump(url)
            return data in dump or data.hex().encode() in dump  # bytea columns dump as hex

        return cls("postgres", lambda: PostgresLedger(url, pool_size=2), stored)


def to_verifying(ledger: ForgetLedger, name: str) -> str:
    """A new job for `name`, armed, claimed by worker "w" and VERIFYING; its forget id."""
    job, _ = ledger.submit(ForgetPayload(subjects=(name,)), "npo", "r", None, "op")
    ledger.arm(job.forget_id, b"entries")
    assert ledger.claim_next("w") is not None
    ledger.transition(job.forget_id, ForgetState.VERIFYING, worker_id="w")
    return job.forget_id

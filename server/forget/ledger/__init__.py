"""The forget ledger: durable record of forget jobs, adapters, stack versions and the audit log.

`ForgetLedger` is the interface; `SqliteLedger` is the default, one file in the data directory;
`PostgresLedger` (postgres.py, imported only when asked for) is the state several replicas share.
Both run the same queries (`SqlLedger`, sql_common.py). `open_ledger` picks one from a URL.
"""

from __future__ import annotations

from pathlib import Path

from server.forget.ledger.base import (ForgetLedger, IdempotencyConflict, LedgerError, LedgerUnavailable, NotOwner,
                                       StackHold, UnknownForget)
from server.forget.ledger.sqlite import SqliteLedger

__all__ = ["ForgetLedger", "IdempotencyConflict", "LedgerError", "LedgerUnavailable", "NotOwner", "SqliteLedger",
           "StackHold", "UnknownForget", "open_ledger"]


def open_ledger(url: str | None, sqlite_path: Path) -> ForgetLedger:
    """PostgreSQL when `url` is given (postgresql:// or postgres://), else SQLite at `sqlite_path`."""
    if not url:
        return SqliteLedger(sqlite_path)
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("--ledger-url must be a postgresql:// URL")
    from server.forget.ledger.postgres import PostgresLedger  # psycopg loads only when used

    return PostgresLedger(url)

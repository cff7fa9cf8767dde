"""The forget ledger: durable record of forget jobs, adapters, stack versions and the audit log.

`ForgetLedger` is the interface (a PostgreSQL implementation can fill it for several replicas);
`SqliteLedger` is the default, one file in the data directory.
"""

from server.forget.ledger.base import ForgetLedger, IdempotencyConflict, LedgerError, NotOwner, UnknownForget
from server.forget.ledger.sqlite import SqliteLedger

__all__ = ["ForgetLedger", "IdempotencyConflict", "LedgerError", "NotOwner", "SqliteLedger", "UnknownForget"]

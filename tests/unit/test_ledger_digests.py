"""The ledger keeps only keyed content digests: idempotency conflicts, and old plain digests erased."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from server.forget.jobs import ForgetPayload
from server.guard.keys import GuardKeys
from server.forget.ledger import IdempotencyConflict, SqliteLedger
from tests.support.ledgers import LedgerBackend

KEYS = GuardKeys(b"k" * 32)


def _digest(p: ForgetPayload) -> str:
    return KEYS.content_digest(p.to_json().encode())


def test_a_key_reused_with_other_content_conflicts(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    a, b = ForgetPayload(subjects=("Ann Lee",)), ForgetPayload(subjects=("Bo Chen",))
    job, created = ledger.submit(a, "npo", "r", "key-1", "op", _digest(a))
    again, created_again = ledger.submit(a, "npo", "r", "key-1", "op", _digest(a))
    assert created and not created_again and again.forget_id == job.forget_id
    with pytest.raises(IdempotencyConflict):
        ledger.submit(b, "npo", "r", "key-1", "op", _digest(b))
    assert _digest(a) != GuardKeys(b"x" * 32).content_digest(a.to_json().encode())  # keyed
    ledger.close()


def test_plain_digests_of_an_old_sqlite_ledger_are_erased(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    payload = ForgetPayload(subjects=("Ann Lee",))
    plain = hashlib.sha256(payload.to_json().encode()).hexdigest()
    ledger = SqliteLedger(path)
    ledger.submit(payload, "npo", "r", "key-1", "op", _digest(payload))
    ledger.close()
    with sqlite3.connect(path) as db:  # make it look like a ledger from before keyed digests
        db.execute("ALTER TABLE forgets RENAME COLUMN content_hmac TO content_sha256")
        db.execute("UPDATE forgets SET content_sha256 = ?", (plain,))
        db.execute("UPDATE audit SET details = ?", (json.dumps({"content_sha256": plain, "texts": 0}),))
    db.close()
    ledger = SqliteLedger(path)
    job, created = ledger.submit(ForgetPayload(subjects=("Bo Chen",)), "npo", "r", "key-1", "op", "x")
    assert not created  # an old key matches: its digest is gone, so there is nothing to compare
    ledger.close()
    for f in tmp_path.iterdir():
        assert plain.encode() not in f.read_bytes(), f

"""Sealed leakage probes go when they can no longer serve: on DEACTIVATED and on FAILED, out of
the database file and its WAL (SQLite), out of every row (PostgreSQL)."""

from __future__ import annotations

import time

from server.forget.jobs import AdapterRecord, ForgetPayload, ForgetState
from server.forget.ledger import ForgetLedger
from tests.support.ledgers import LedgerBackend

PROBES = b"sealed-probe-bytes-0123456789"


def _to_verifying(ledger: ForgetLedger, name: str) -> str:
    job, _ = ledger.submit(ForgetPayload(subjects=(name,)), "npo", "r", None, "op")
    ledger.arm(job.forget_id, b"entries")
    assert ledger.claim_next("w") is not None
    ledger.transition(job.forget_id, ForgetState.VERIFYING, worker_id="w")
    return job.forget_id


def test_probes_are_erased_on_deactivation_and_failure(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    fid = _to_verifying(ledger, "Ann Lee")
    ledger.record_adapter(AdapterRecord("ad_1", fid, "adapters/ad_1", "0" * 64, "npo", 8, 1, time.time()),
                          1, PROBES, worker_id="w")
    ledger.activate(fid, expected_version=0)
    assert [p for _, _, p in ledger.monitor_probes()] == [PROBES] and not ledger_backend.stored(PROBES)  # sealed
    ledger.deactivate("ad_1", expected_version=1, reason="undo", actor="op")
    assert ledger.monitor_probes() == [] and not ledger_backend.stored(PROBES)

    other = _to_verifying(ledger, "Bo Chen")
    ledger.record_adapter(AdapterRecord("ad_2", other, "adapters/ad_2", "0" * 64, "npo", 8, 1, time.time()),
                          1, PROBES, worker_id="w")
    ledger.fail(other, "gate failed")
    assert not ledger_backend.stored(PROBES)
    ledger.close()

"""Sealed leakage probes go when they can no longer serve: on DEACTIVATED and on FAILED, out of
the database file and its WAL (SQLite), out of every row (PostgreSQL)."""

from __future__ import annotations

import time

from server.forget.jobs import AdapterRecord
from tests.support.ledgers import LedgerBackend, to_verifying

PROBES = b"sealed-probe-bytes-0123456789"


def test_probes_are_erased_on_deactivation_and_failure(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    fid = to_verifying(ledger, "Ann Lee")
    ledger.record_adapter(AdapterRecord("ad_1", fid, "adapters/ad_1", "0" * 64, "npo", 8, 1, time.time()),
                          1, PROBES, worker_id="w")
    ledger.activate(fid, expected_version=0)
    assert [p for _, _, p in ledger.monitor_probes()] == [PROBES] and not ledger_backend.stored(PROBES)  # sealed
    ledger.deactivate("ad_1", expected_version=1, reason="undo", actor="op")
    assert ledger.monitor_probes() == [] and not ledger_backend.stored(PROBES)

    other = to_verifying(ledger, "Bo Chen")
    ledger.record_adapter(AdapterRecord("ad_2", other, "adapters/ad_2", "0" * 64, "npo", 8, 1, time.time()),
                          1, PROBES, worker_id="w")
    ledger.fail(other, "gate failed")
    assert not ledger_backend.stored(PROBES)
    ledger.close()

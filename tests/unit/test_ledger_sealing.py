"""Crypto-shredding in the SQLite ledger: the payload and the probes are never on disk in the
clear, their per-forget keys die on schedule (payload: ACTIVE / FAILED; probes: DEACTIVATED /
FAILED), and a ledger from before sealing has its plaintext sealed when it is opened."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from server.forget.jobs import AdapterRecord, ForgetPayload
from server.forget.ledger import SqliteLedger
from tests.support.ledgers import to_verifying

PROBES = b"sealed-probe-bytes-0123456789"


def _on_disk(directory: Path, needle: bytes) -> bool:
    return any(needle in f.read_bytes() for f in directory.iterdir() if f.is_file())


def _keys(path: Path, forget_id: str) -> set[str]:
    """The purposes whose key exists, read over a second connection."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT purpose FROM forget_keys WHERE forget_id = ?", (forget_id,)).fetchall()
    db.close()
    return {r[0] for r in rows}


def test_keys_are_destroyed_on_schedule(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path)
    fid = to_verifying(ledger, "Ann Lee")
    ledger.record_adapter(AdapterRecord("ad_1", fid, "adapters/ad_1", "0" * 64, "npo", 8, 1, time.time()),
                          1, PROBES, worker_id="w")
    assert not _on_disk(tmp_path, PROBES) and not _on_disk(tmp_path, b"Ann Lee")  # sealed, even in flight
    assert _keys(path, fid) == {"payload", "probes"}
    ledger.activate(fid, expected_version=0)
    assert [p for _, _, p in ledger.monitor_probes()] == [PROBES]
    assert _keys(path, fid) == {"probes"} and ledger.armed_payloads() == []  # the payload's key is gone
    ledger.deactivate("ad_1", expected_version=1, reason="undo", actor="op")
    assert ledger.monitor_probes() == [] and _keys(path, fid) == set()

    other = to_verifying(ledger, "Bo Chen")
    ledger.record_adapter(AdapterRecord("ad_2", other, "adapters/ad_2", "0" * 64, "npo", 8, 1, time.time()),
                          1, PROBES, worker_id="w")
    ledger.fail(other, "gate failed")
    assert _keys(path, other) == set() and ledger.armed_payloads() == []
    ledger.close()


def test_a_ledger_from_before_sealing_has_its_plaintext_sealed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path)
    fid = to_verifying(ledger, "Cy Ortega")
    ledger.close()
    plain = ForgetPayload(subjects=("Cy Ortega",))
    with sqlite3.connect(path) as db:  # what an older version wrote: plaintext JSON, no key
        db.execute("UPDATE payloads SET payload = ?", (plain.to_json(),))
        db.execute("DELETE FROM forget_keys")
    db.close()
    assert _on_disk(tmp_path, b"Cy Ortega")
    ledger = SqliteLedger(path)
    assert ledger.armed_payloads() == [(fid, plain)]
    assert not _on_disk(tmp_path, b"Cy Ortega")
    ledger.close()

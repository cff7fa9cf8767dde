"""The shared adapter store on PostgreSQL: an artifact recorded from one machine's directory
comes back byte for byte on another, verified while it streams; a tampered chunk or a missing
blob leaves nothing behind; storing it twice keeps one copy. The blobs are written in the
transaction that records the adapter: a failure before its commit leaves neither."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest

from server.forget.jobs import AdapterRecord, ForgetPayload, ForgetState
from server.forget.ledger import LedgerError, SqliteLedger
from server.forget.ledger import sql_common
from server.forget.ledger.postgres import PostgresLedger
from server.forget.shared_store import CHUNK_BYTES, SharedStoreError, artifact_blobs, fetch, shared_blobs

WORKER = "w-1"


def _artifact(root: Path) -> Path:
    """A directory shaped like an engine artifact: files + a manifest of their sha256."""
    root.mkdir(parents=True)
    files = {"adapter_model.safetensors": bytes(range(256)) * (CHUNK_BYTES // 128 + 3),  # > 2 chunks
             "adapter_config.json": b'{"r": 8}', "README.md": b"forget adapter"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    manifest = {"files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}, "format_version": 1}
    (root / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
    return root


def _claimed(ledger: PostgresLedger) -> str:
    """A job a worker has claimed, ready for its adapter to be recorded; its forget id."""
    job, _ = ledger.submit(ForgetPayload(texts=("a passage",)), "npo", "r", None, "op")
    ledger.arm(job.forget_id, b"entries")
    assert ledger.claim_next(WORKER) is not None
    return job.forget_id


def _record(ledger: PostgresLedger, src: Path, **kwargs: object) -> str:
    """Record `src` for a freshly claimed job with its blobs; the manifest's sha256."""
    digest = hashlib.sha256((src / "manifest.json").read_bytes()).hexdigest()
    fid = _claimed(ledger)
    ledger.record_adapter(AdapterRecord(f"ad_{fid}", fid, src.name, digest, "npo", 8, 1, 0.0),
                          worker_id=WORKER, blobs=artifact_blobs(src), **kwargs)  # type: ignore[arg-type]
    return digest


def _rows(url: str) -> tuple[int, int, int]:
    """(adapters, blobs, chunks) stored."""
    with psycopg.connect(url) as conn:
        return tuple(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # type: ignore[return-value]
                     for t in ("adapters", "blobs", "blob_chunks"))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_artifact_round_trips_and_is_stored_once(postgres_url: str, tmp_path: Path) -> None:
    worker, replica = PostgresLedger(postgres_url), PostgresLedger(postgres_url)
    src = _artifact(tmp_path / "worker" / "ad_1")
    digest = _record(worker, src)
    _record(worker, src)  # the same bytes for another job: content-addressed, nothing new
    dest = tmp_path / "replica" / "adapters" / "ad_1"
    assert fetch(replica.blobs(), digest, dest)
    assert _tree(dest) == _tree(src)
    assert not fetch(replica.blobs(), "0" * 64, tmp_path / "replica" / "adapters" / "ad_2")
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 4  # 3 files + manifest
    with pytest.raises(LedgerError, match="does not hash"):  # a blob is stored only under its digest
        worker.blobs().put("f" * 64, [b"other bytes"])
    worker.close()
    replica.close()


def test_a_tampered_chunk_is_refused_and_leaves_nothing(postgres_url: str, tmp_path: Path) -> None:
    ledger = PostgresLedger(postgres_url)
    src = _artifact(tmp_path / "worker" / "ad_1")
    digest = _record(ledger, src)
    weights = json.loads((src / "manifest.json").read_text())["files"]["adapter_model.safetensors"]
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE blob_chunks SET data = %s WHERE sha256 = %s AND idx = 1", (b"x" * 10, weights))
    store = tmp_path / "replica" / "adapters"
    with pytest.raises(SharedStoreError, match="does not hash"):
        fetch(ledger.blobs(), digest, store / "ad_1")
    assert list(store.iterdir()) == []  # no partial artifact for a loader to find
    ledger.close()


def test_a_failure_before_the_record_commits_leaves_neither_the_adapter_nor_its_blobs(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = PostgresLedger(postgres_url)
    src = _artifact(tmp_path / "worker" / "ad_1")

    def injected(*_args: object) -> None:  # fails after the blobs and the adapter row are written
        raise RuntimeError("injected failure before commit")
    with monkeypatch.context() as m:
        m.setattr(sql_common, "seal", injected)
        with pytest.raises(RuntimeError, match="injected"):
            _record(ledger, src, probes=b"sealed probes")
    assert _rows(postgres_url) == (0, 0, 0)
    (failed,) = ledger.list([ForgetState.TRAINING])
    assert failed.adapter_id == ""

    # A blob whose bytes are not its digest rolls back the whole record the same way.
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["files"]["README.md"] = "e" * 64
    (src / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
    with pytest.raises(LedgerError, match="does not hash"):
        _record(ledger, src)
    assert _rows(postgres_url) == (0, 0, 0)

    # Retried whole, the record and every blob commit together.
    again = _artifact(tmp_path / "again" / "ad_1")
    digest = hashlib.sha256((again / "manifest.json").read_bytes()).hexdigest()
    ledger.record_adapter(AdapterRecord("ad_retry", failed.forget_id, "ad_1", digest, "npo", 8, 1, 0.0),
                          worker_id=WORKER, blobs=artifact_blobs(again))
    assert _rows(postgres_url) == (1, 4, 6)  # 3 files (one of 3 chunks) + the manifest
    assert ledger.get(failed.forget_id).adapter_id == "ad_retry"
    ledger.close()


def test_one_node_shares_nothing_and_refuses_blobs(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")  # its adapter directory is the store
    src = _artifact(tmp_path / "worker" / "ad_1")
    assert shared_blobs(ledger, src) == []
    fid = _claimed(ledger)  # type: ignore[arg-type]
    with pytest.raises(LedgerError, match="no shared adapter store"):
        ledger.record_adapter(AdapterRecord("ad_1", fid, "ad_1", "0" * 64, "npo", 8, 1, 0.0), worker_id=WORKER,
                              blobs=artifact_blobs(src))
    assert ledger.get(fid).adapter_id == ""
    ledger.close()

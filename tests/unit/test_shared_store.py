"""The shared adapter store on PostgreSQL: an artifact published from one machine's directory
comes back byte for byte on another, verified while it streams; a tampered chunk or a missing
blob leaves nothing behind; publishing twice keeps one copy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest

from server.forget.ledger import LedgerError
from server.forget.ledger.postgres import PostgresLedger
from server.forget.shared_store import CHUNK_BYTES, SharedStoreError, fetch, publish


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


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_artifact_round_trips_and_is_stored_once(postgres_url: str, tmp_path: Path) -> None:
    worker, replica = PostgresLedger(postgres_url), PostgresLedger(postgres_url)
    src = _artifact(tmp_path / "worker" / "ad_1")
    digest = publish(worker.blobs(), src)
    assert digest == hashlib.sha256((src / "manifest.json").read_bytes()).hexdigest()
    publish(worker.blobs(), src)  # a retry: content-addressed, nothing new
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
    digest = publish(ledger.blobs(), src)
    weights = json.loads((src / "manifest.json").read_text())["files"]["adapter_model.safetensors"]
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE blob_chunks SET data = %s WHERE sha256 = %s AND idx = 1", (b"x" * 10, weights))
    store = tmp_path / "replica" / "adapters"
    with pytest.raises(SharedStoreError, match="does not hash"):
        fetch(ledger.blobs(), digest, store / "ad_1")
    assert list(store.iterdir()) == []  # no partial artifact for a loader to find
    ledger.close()

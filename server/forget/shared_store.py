"""The shared adapter store: artifacts published to the ledger's blob store, fetched into each
replica's own adapter directory (its local cache) when a stack needs them.

An artifact is stored as its files, each under the sha256 its manifest lists, plus the
manifest itself under the sha256 the ledger's AdapterRecord names. `shared_blobs` lists them
(lazily: a file is opened when its blob is written, and read a chunk at a time) for the worker
to hand to `ForgetLedger.record_adapter`, which writes them in the transaction that records the
adapter: a recorded adapter's blobs are always there, and a record that fails leaves none
(content-addressed: recording the same bytes twice keeps one copy). `fetch` checks the manifest against the record's digest and every file against
the manifest while it streams it, writes into a temporary sibling and renames it into place;
the artifact loader then verifies the manifest again, as on every load.

`local_paths` is what the coordinator (for a stack it is about to serve) and the worker (for the
stack it trains on top of) call. Never deletes a blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from server.forget.layout import DataDir
from server.forget.ledger.base import BlobStore, ForgetLedger

MANIFEST = "manifest.json"
CHUNK_BYTES = 1 << 20  # 1 MiB: small enough to stream, large enough that a query per chunk is cheap


class SharedStoreError(Exception):
    """A blob is missing, or its bytes do not match the digest that names them."""


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk


def artifact_blobs(artifact: Path) -> list[tuple[str, Iterable[bytes]]]:
    """(sha256, chunks) of the artifact directory's files and of its manifest; a file is only
    opened when its chunks are iterated."""
    manifest = (artifact / MANIFEST).read_bytes()
    blobs: list[tuple[str, Iterable[bytes]]] = [(digest, _file_chunks(artifact / _safe_name(name)))
                                                for name, digest in json.loads(manifest)["files"].items()]
    return [*blobs, (hashlib.sha256(manifest).hexdigest(), [manifest])]


def shared_blobs(ledger: ForgetLedger, artifact: Path) -> list[tuple[str, Iterable[bytes]]]:
    """What `record_adapter` must store with this artifact: its blobs where the ledger shares
    adapters between replicas, nothing for one node (its adapter directory is the store)."""
    return [] if ledger.blobs() is None else artifact_blobs(artifact)


def _safe_name(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise SharedStoreError(f"manifest names a file outside the artifact: {name!r}")
    return rel


def _write_verified(blobs: BlobStore, digest: str, dest: Path) -> bytes | None:
    """Stream blob `digest` into `dest`, checking its sha256; its bytes if it is small (the
    manifest), else b"". None when the store does not have it."""
    chunks = blobs.get(digest)
    if chunks is None:
        return None
    h, small = hashlib.sha256(), bytearray()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as f:
        for chunk in chunks:
            h.update(chunk)
            f.write(chunk)
            small += chunk if len(small) <= CHUNK_BYTES else b""
        f.flush()
        os.fsync(f.fileno())
    if h.hexdigest() != digest:
        raise SharedStoreError(f"blob {digest[:12]}… does not hash to its name: refused")
    return bytes(small) if len(small) <= CHUNK_BYTES else b""


def fetch(blobs: BlobStore, manifest_sha256: str, dest: Path) -> bool:
    """Materialise the artifact whose manifest hashes to `manifest_sha256` at `dest`; False when
    the store does not have it. Raises SharedStoreError on any mismatch (nothing is left)."""
    if dest.exists():
        return True
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        manifest = _write_verified(blobs, manifest_sha256, tmp / MANIFEST)
        if manifest is None:
            return False
        for name, digest in json.loads(manifest)["files"].items():
            if _write_verified(blobs, digest, tmp / _safe_name(name)) is None:
                raise SharedStoreError(f"blob {digest[:12]}… of {dest.name} is missing from the shared store")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.exists():  # not a concurrent fetch of the same artifact that won
                raise
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def local_paths(ledger: ForgetLedger, data: DataDir, adapter_ids: tuple[str, ...] | list[str]) -> dict[str, Path]:
    """Where each adapter is on this machine; with a shared store, one trained elsewhere is
    fetched (and verified) into the local adapter directory first. A path may still be missing
    when the store does not have the adapter. Blocking."""
    blobs = ledger.blobs()
    paths = {}
    for adapter_id in adapter_ids:
        record = ledger.adapter(adapter_id)
        paths[adapter_id] = path = data.adapter_path(record.path)
        if blobs is not None and not path.exists():
            fetch(blobs, record.sha256, path)
    return paths

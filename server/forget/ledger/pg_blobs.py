"""Content-addressed blobs in PostgreSQL, in chunks: the shared adapter store's backing.

`put_blob` streams chunks into the caller's transaction and checks their sha256 before it
commits, so a blob row is only ever visible with all of its chunks and under its true digest;
storing a blob that exists already is a no-op (two workers, or a retry, agree on one copy). The
ledger's `record_adapter` calls it (`put_blobs`) in the transaction that records the adapter,
so an adapter row never exists without its blobs, nor blobs of an adapter that was not
recorded; `PostgresBlobs.put` is one blob in a transaction of its own. `get` reads one
chunk per query, so neither side holds a whole artifact in memory. Does not verify on read:
the reader hashes what it wrote (server/forget/shared_store.py), and the artifact loader checks
the manifest again on every load.
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable, ContextManager, Iterable, Iterator

import psycopg

from server.forget.ledger.base import LedgerError


def put_blob(db: psycopg.Connection, sha256: str, chunks: Iterable[bytes]) -> bool:
    """Store one blob inside the caller's transaction, a query per chunk (the chunks are
    consumed one at a time, never joined); False, and `chunks` untouched, when it is stored
    already (a concurrent insert of the same digest waits for that transaction to end). Raises
    LedgerError when the bytes do not hash to `sha256`: the caller's transaction rolls back."""
    created = db.execute("INSERT INTO blobs (sha256, size, chunks, created_at) VALUES (%s, 0, 0, %s) "
                         "ON CONFLICT (sha256) DO NOTHING RETURNING sha256", (sha256, time.time())).fetchone()
    if created is None:
        return False
    digest, size, n = hashlib.sha256(), 0, 0
    for chunk in chunks:
        digest.update(chunk)
        db.execute("INSERT INTO blob_chunks (sha256, idx, data) VALUES (%s, %s, %s)", (sha256, n, chunk))
        size, n = size + len(chunk), n + 1
    if digest.hexdigest() != sha256:
        raise LedgerError(f"blob content does not hash to {sha256[:12]}…")
    db.execute("UPDATE blobs SET size = %s, chunks = %s WHERE sha256 = %s", (size, n, sha256))
    return True


def put_blobs(db: psycopg.Connection, blobs: Iterable[tuple[str, Iterable[bytes]]]) -> None:
    """Several blobs in the caller's transaction, in digest order: two transactions storing
    overlapping sets (two adapters sharing a config file) take the rows' locks in one order and
    never deadlock."""
    for sha256, chunks in sorted(blobs, key=lambda blob: blob[0]):
        put_blob(db, sha256, chunks)


class PostgresBlobs:
    def __init__(self, tx: Callable[[], ContextManager[psycopg.Connection]]):
        self._tx = tx

    def put(self, sha256: str, chunks: Iterable[bytes]) -> bool:
        with self._tx() as db:
            return put_blob(db, sha256, chunks)

    def get(self, sha256: str) -> Iterator[bytes] | None:
        with self._tx() as db:
            row = db.execute("SELECT chunks FROM blobs WHERE sha256 = %s", (sha256,)).fetchone()
        if row is None:
            return None
        return self._chunks(sha256, row["chunks"])

    def _chunks(self, sha256: str, n: int) -> Iterator[bytes]:
        for idx in range(n):
            with self._tx() as db:
                row = db.execute("SELECT data FROM blob_chunks WHERE sha256 = %s AND idx = %s",
                                 (sha256, idx)).fetchone()
            if row is None:
                raise LedgerError(f"blob {sha256[:12]}… lost chunk {idx}")
            yield bytes(row["data"])

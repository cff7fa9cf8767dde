"""The PostgreSQL ledger's schema as versioned migrations, and the code that applies them.

The tables mirror the SQLite ledger's (server/forget/ledger/sqlite.py) column for column; a
`seq` column stands in for SQLite's rowid wherever order matters. Payloads and probes are only
ever stored sealed, their per-forget keys in `forget_keys` (server/forget/sealing.py). Every replica and worker runs
`migrate()` when it opens the ledger: the migrations run in one transaction under a
transaction-level advisory lock, so two replicas starting at once apply each migration exactly
once and neither sees a half-built schema. A migration is never edited once released: append
a new one. Does not hold queries of the ledger itself (sql_common.py, postgres.py).
"""

from __future__ import annotations

import time
from typing import Any

# pg_advisory_xact_lock keys: an arbitrary constant per purpose, shared by every Lethe process.
MIGRATION_LOCK = 0x1E7E_0001
STACK_LOCK = 0x1E7E_0002  # one stack commit at a time (transaction-level)
STACK_TURN = 0x1E7E_0003  # one replica building + committing a version at a time (session-level)

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE forgets (
  seq BIGSERIAL UNIQUE, forget_id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, state TEXT NOT NULL,
  method TEXT NOT NULL, reason TEXT NOT NULL, num_texts INTEGER NOT NULL, num_qa INTEGER NOT NULL,
  num_subjects INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
  failure_reason TEXT NOT NULL DEFAULT '', adapter_id TEXT NOT NULL DEFAULT '',
  stack_version INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  metrics TEXT NOT NULL DEFAULT '{}', worker_id TEXT, guard_entries BYTEA, content_hmac TEXT NOT NULL DEFAULT '',
  claim_epoch INTEGER NOT NULL DEFAULT 0, commitment TEXT NOT NULL DEFAULT '');
CREATE INDEX forgets_by_state ON forgets (state, seq);
CREATE TABLE payloads (forget_id TEXT PRIMARY KEY, payload BYTEA NOT NULL);
CREATE TABLE forget_keys (forget_id TEXT NOT NULL, purpose TEXT NOT NULL, key BYTEA NOT NULL,
  PRIMARY KEY (forget_id, purpose));
CREATE TABLE transitions (seq BIGSERIAL PRIMARY KEY, forget_id TEXT NOT NULL, state TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE INDEX transitions_by_job ON transitions (forget_id, seq);
CREATE TABLE progress (seq BIGSERIAL PRIMARY KEY, forget_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX progress_by_job ON progress (forget_id, seq);
CREATE TABLE adapters (adapter_id TEXT PRIMARY KEY, forget_id TEXT NOT NULL, path TEXT NOT NULL,
  sha256 TEXT NOT NULL, method TEXT NOT NULL, rank INTEGER NOT NULL, size_bytes BIGINT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL, metrics TEXT NOT NULL, activated_at DOUBLE PRECISION);
CREATE TABLE stacks (version INTEGER PRIMARY KEY, adapter_ids TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE audit (seq BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, target TEXT NOT NULL, details TEXT NOT NULL);
CREATE TABLE workers (worker_id TEXT PRIMARY KEY, heartbeat DOUBLE PRECISION NOT NULL);
CREATE TABLE probes (forget_id TEXT PRIMARY KEY, sealed BYTEA NOT NULL);
CREATE TABLE guard_hits (forget_id TEXT NOT NULL, stage TEXT NOT NULL, phase TEXT NOT NULL,
  count BIGINT NOT NULL, PRIMARY KEY (forget_id, stage, phase));
CREATE TABLE resolutions (forget_id TEXT PRIMARY KEY, corpus_digest TEXT NOT NULL, counts TEXT NOT NULL,
  entry_ids TEXT NOT NULL);
CREATE TABLE receipts (forget_id TEXT NOT NULL, kind TEXT NOT NULL, body BYTEA NOT NULL, signature BYTEA NOT NULL,
  PRIMARY KEY (forget_id, kind));
INSERT INTO stacks (version, adapter_ids, created_at) VALUES (0, '[]', %(now)s);
"""),
    # The shared adapter store (server/forget/shared_store.py): content-addressed blobs in chunks.
    # A blob row commits with all of its chunks, so a visible blob is always whole.
    (2, """
CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, chunks INTEGER NOT NULL,
  created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE blob_chunks (sha256 TEXT NOT NULL REFERENCES blobs ON DELETE CASCADE, idx INTEGER NOT NULL,
  data BYTEA NOT NULL, PRIMARY KEY (sha256, idx));
"""),
    # What every process on this ledger must agree on (server/forget/agreement.py): fingerprints only.
    (3, """
CREATE TABLE agreements (name TEXT PRIMARY KEY, value TEXT NOT NULL, recorded_at DOUBLE PRECISION NOT NULL);
"""),
)

LATEST = MIGRATIONS[-1][0]


def migrate(conn: Any) -> int:
    """Bring the schema to LATEST inside the caller's transaction; returns the version found.
    Refuses a database migrated by a newer Lethe (its schema may mean something we do not know)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                 "applied_at DOUBLE PRECISION NOT NULL)")
    found = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").fetchone()["v"]
    if found > LATEST:
        raise RuntimeError(f"the ledger's schema is version {found}, newer than this Lethe knows ({LATEST}): "
                           "upgrade this replica before it joins")
    for version, sql in MIGRATIONS:
        if version > found:
            now = time.time()
            conn.execute(sql.replace("%(now)s", repr(now)))
            conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)", (version, now))
    return found

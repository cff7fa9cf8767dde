"""Another replica, as a test plays it: a second PostgresLedger that files, arms and completes
forgets the way a replica and its worker would, with guard entries derived under the same key
as the replica under test. Also a condition wait for another process's background work."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from server.forget.jobs import ForgetPayload, ForgetState
from server.forget.ledger.postgres import PostgresLedger
from server.forget.resolution import guard_items
from server.guard import GuardConfig, LeakageGuard

WORKER = "remote-worker"


def guard_for(key: bytes, cache_dir: Path) -> LeakageGuard:
    """A guard under `key`: derives entries the replica under test can arm."""
    return LeakageGuard(GuardConfig(model_cache_dir=cache_dir / "guard"), key)


def file_and_arm(ledger: PostgresLedger, guard: LeakageGuard, subject: str) -> str:
    """A forget of `subject` filed and armed elsewhere (lexical entries); its forget id."""
    payload = ForgetPayload(subjects=(subject,))
    job, _ = ledger.submit(payload, "npo", "r", None, "op")
    ledger.arm(job.forget_id, guard.derive(job.forget_id, guard_items(payload), semantic=False).to_bytes())
    return job.forget_id


def claim_to_verifying(ledger: PostgresLedger, forget_id: str) -> None:
    claimed = ledger.claim_next(WORKER)
    assert claimed is not None and claimed[0].forget_id == forget_id
    ledger.transition(forget_id, ForgetState.VERIFYING, worker_id=WORKER)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    ev = threading.Event()
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        ev.wait(0.1)  # wait-ok: another replica's background work is what is under test
    raise AssertionError(f"timed out waiting for {what}")

"""ReplicaFollower: a notification that names a forget arms it from that forget's row alone (the
cost of arming does not grow with the ledger); a stack version or a reconnect reconciles in full;
a periodic reconcile catches what no notification named."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Collection

from server.forget.follower import ReplicaFollower
from server.forget.jobs import ForgetPayload, ForgetState
from server.forget.ledger import SqliteLedger
from server.forget.resolution import guard_items
from server.guard import GuardConfig, LeakageGuard
from server.metrics import ServerMetrics


class ReadsRecorded(SqliteLedger):
    def __init__(self, path: Path):
        super().__init__(path)
        self.reads: list[frozenset[str] | None] = []

    def guard_entries(self, forget_ids: Collection[str] | None = None) -> list[tuple[str, bytes, ForgetState]]:
        self.reads.append(None if forget_ids is None else frozenset(forget_ids))
        return super().guard_entries(forget_ids)


class NoStacks:
    async def follow_stack(self) -> None:
        return None


def _arm(ledger: SqliteLedger, other: LeakageGuard, subject: str) -> str:
    payload = ForgetPayload(subjects=(subject,))
    job, _ = ledger.submit(payload, "npo", "r", None, "op")
    ledger.arm(job.forget_id, other.derive(job.forget_id, guard_items(payload), semantic=False).to_bytes())
    return job.forget_id


async def _until(check, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)  # wait-ok: the follower's task runs on this loop
    raise AssertionError(f"timed out waiting for {what}")


def test_a_notified_forget_is_read_alone_and_others_wait_for_a_full_reconcile(tmp_path: Path) -> None:
    key = os.urandom(32)
    ledger = ReadsRecorded(tmp_path / "ledger.db")
    elsewhere = LeakageGuard(GuardConfig(), key)  # another replica, same guard key
    here = LeakageGuard(GuardConfig(), key)
    quiet = _arm(ledger, elsewhere, "Ann Lee")  # armed elsewhere, its notification lost

    async def scenario() -> None:
        follower = ReplicaFollower(ledger, here, NoStacks(), ServerMetrics(),  # type: ignore[arg-type]
                                   reconcile_seconds=3600, max_lag_seconds=60)
        task = asyncio.create_task(follower.run())
        try:
            loud = _arm(ledger, elsewhere, "Orlan Vexmoor")
            follower._heard(f"armed:{loud}:{time.time():.6f}")
            await _until(lambda: here.entries_of(loud) is not None, "the notified forget to be armed")
            assert ledger.reads == [frozenset({loud})] and here.entries_of(quiet) is None
            follower._heard("stack:1")  # not about one forget: everything is read again
            await _until(lambda: here.entries_of(quiet) is not None, "a full reconcile")
            assert ledger.reads[-1] is None
        finally:
            task.cancel()

    asyncio.run(scenario())
    ledger.close()

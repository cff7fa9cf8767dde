"""Two workers race for one job over their own connections to one ledger (SQLite, PostgreSQL): exactly one
claims it, and once it is presumed dead and the job re-queued, none of its writes land."""

from __future__ import annotations

import time

import pytest

from server.forget.jobs import AdapterRecord, ForgetPayload, ForgetState, JobProgress
from server.forget.ledger import NotOwner
from tests.support.claims import race_to_claim
from tests.support.ledgers import LedgerBackend


def _adapter(fid: str) -> AdapterRecord:
    return AdapterRecord("ad_1", fid, "adapters/ad_1", "0" * 64, "npo", 8, 1, time.time())


def test_two_workers_race_for_one_job(ledger_backend: LedgerBackend) -> None:
    server = ledger_backend.open()
    job, _ = server.submit(ForgetPayload(subjects=("Ann Lee",)), "npo", "r", None, "op")
    server.arm(job.forget_id, b"entries")
    workers = {name: ledger_backend.open() for name in ("w-a", "w-b")}
    first, second, _ = race_to_claim(workers)

    # The first worker stalls past the orphan timeout: the server re-queues its job.
    assert server.requeue_orphans(older_than=time.time() + 1) == [job.forget_id]
    assert workers[second].claim_next(second) is not None
    second_beat = server.last_heartbeat()
    stale = workers[first]
    with pytest.raises(NotOwner):
        stale.record_progress(job.forget_id, JobProgress(1, 5, 40), worker_id=first)
    with pytest.raises(NotOwner):
        stale.transition(job.forget_id, ForgetState.VERIFYING, worker_id=first)
    with pytest.raises(NotOwner):
        stale.record_adapter(_adapter(job.forget_id), worker_id=first)
    with pytest.raises(NotOwner):
        stale.fail(job.forget_id, "stale", worker_id=first)
    now = server.get(job.forget_id)
    assert now.state == ForgetState.TRAINING and not server.progress_after(job.forget_id, 0)
    assert server.last_heartbeat() == second_beat  # the stale writer refreshed nobody's heartbeat
    workers[second].record_progress(job.forget_id, JobProgress(1, 5, 40), worker_id=second)
    assert len(server.progress_after(job.forget_id, 0)) == 1
    for ledger in (server, *workers.values()):
        ledger.close()


def test_a_worker_can_tell_whether_any_other_worker_is_alive(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    assert ledger.last_heartbeat(excluding="me") is None
    ledger.heartbeat("me")
    assert ledger.last_heartbeat(excluding="me") is None and ledger.last_heartbeat() is not None
    ledger.heartbeat("other")
    assert ledger.last_heartbeat(excluding="me") is not None
    ledger.close()

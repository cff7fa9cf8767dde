"""Two workers race for one job on a real `lethe serve`: one claim wins; when the winner goes
silent the server re-queues the job and the other worker claims it under a newer claim epoch;
every write of the stale claim (progress, state change, adapter record, failure) is refused
with NotOwner, and the live claim's adapter goes ACTIVE."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.forget.jobs import AdapterRecord, ForgetState, JobProgress
from server.forget.layout import LEDGER_FILE
from server.forget.ledger import NotOwner, SqliteLedger
from tests.procs import ServeProcess
from tests.support.claims import race_to_claim
from tests.support.standin_worker import beating, record_standin, wait_state


def test_the_stale_claim_of_a_raced_job_writes_nothing(demo_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    sp = ServeProcess(demo_model_dir, data, "--no-worker", "--worker-timeout-seconds", "2",
                      "--monitor-interval-seconds", "0")
    workers: dict[str, SqliteLedger] = {}
    try:
        sp.wait_serving()
        with LetheClient(sp.target, sp.token, timeout=60) as c:
            fid = c.admin.Forget(apb.ForgetRequest(qa_pairs=[apb.QAPair(question="Where was Ilse Fenn born?",
                                                                         answer="Corvel")], reason="race"),
                                 metadata=c._metadata).job.forget_id
            workers = {name: SqliteLedger(data / LEDGER_FILE) for name in ("w-a", "w-b")}
            stale_id, live_id, claims = race_to_claim(workers)
            stale_job, _ = claims[stale_id]
            assert stale_job.claim_epoch == 1

            # The winner goes silent: the server re-queues its job, the other worker claims it.
            wait_state(c, fid, apb.FORGET_STATE_FILTERING, timeout=120)
            live = workers[live_id]
            claimed = live.claim_next(live_id)
            assert claimed is not None
            live_job, payload = claimed
            assert live_job.claim_epoch == 2
            with beating(live, live_id):
                stale, fence = workers[stale_id], {"worker_id": stale_id, "epoch": stale_job.claim_epoch}
                with pytest.raises(NotOwner):
                    stale.record_progress(fid, JobProgress(1, 5, 40), **fence)
                with pytest.raises(NotOwner):
                    stale.transition(fid, ForgetState.VERIFYING, "stale", **fence)
                with pytest.raises(NotOwner):
                    stale.record_adapter(AdapterRecord("ad_stale", fid, "ad_stale", "0" * 64, "npo", 8, 1, 0.0),
                                         **fence)
                with pytest.raises(NotOwner):
                    stale.fail(fid, "stale", **fence)
                with pytest.raises(NotOwner):  # the stale id with the live epoch is no owner either
                    stale.record_progress(fid, JobProgress(1, 5, 40), worker_id=stale_id, epoch=2)
                assert live.progress_after(fid, 0) == []
                live.record_progress(fid, JobProgress(1, 5, 40), worker_id=live_id, epoch=live_job.claim_epoch)
            record_standin(live, data, demo_model_dir, live_job, payload, worker_id=live_id)

            job = wait_state(c, fid, apb.FORGET_STATE_ACTIVE)
            states = [t.state for t in job.transitions]
            assert states.count(apb.FORGET_STATE_TRAINING) == 2 and not job.failure_reason
            assert len(live.progress_after(fid, 0)) == 1  # only the live claim's
    finally:
        for ledger in workers.values():
            ledger.close()
        sp.kill()

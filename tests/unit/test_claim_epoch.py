"""The claim epoch: every claim of a job increments it, and a worker write that carries an older
epoch is refused (NotOwner) even when the worker id is the same; on SQLite and PostgreSQL alike."""

from __future__ import annotations

import time

import pytest

from server.forget.jobs import AdapterRecord, ForgetPayload, ForgetState, JobProgress
from server.forget.ledger import NotOwner
from tests.support.ledgers import LedgerBackend


def _adapter(fid: str) -> AdapterRecord:
    return AdapterRecord("ad_1", fid, "adapters/ad_1", "0" * 64, "npo", 8, 1, time.time())


def test_a_newer_claim_by_the_same_worker_id_fences_the_older_one(ledger_backend: LedgerBackend) -> None:
    """The owner id alone cannot tell two claims by one worker apart (a thread of a first attempt
    still writing after the job came back to the same worker): the claim epoch can."""
    ledger = ledger_backend.open()
    job, _ = ledger.submit(ForgetPayload(subjects=("Ann Lee",)), "npo", "r", None, "op")
    ledger.arm(job.forget_id, b"entries")
    first, _ = ledger.claim_next("w")
    assert ledger.requeue_orphans(older_than=time.time() + 1) == [job.forget_id]
    second, _ = ledger.claim_next("w")
    assert second.claim_epoch == first.claim_epoch + 1 == ledger.get(job.forget_id).claim_epoch
    old = first.claim_epoch
    with pytest.raises(NotOwner):
        ledger.record_progress(job.forget_id, JobProgress(1, 5, 40), worker_id="w", epoch=old)
    with pytest.raises(NotOwner):
        ledger.transition(job.forget_id, ForgetState.VERIFYING, worker_id="w", epoch=old)
    with pytest.raises(NotOwner):
        ledger.record_adapter(_adapter(job.forget_id), worker_id="w", epoch=old)
    with pytest.raises(NotOwner):
        ledger.fail(job.forget_id, "stale", worker_id="w", epoch=old)
    assert ledger.get(job.forget_id).state == ForgetState.TRAINING and not ledger.progress_after(job.forget_id, 0)
    ledger.record_progress(job.forget_id, JobProgress(1, 5, 40), worker_id="w", epoch=second.claim_epoch)
    ledger.record_adapter(_adapter(job.forget_id), worker_id="w", epoch=second.claim_epoch)
    assert ledger.get(job.forget_id).adapter_id == "ad_1"
    ledger.close()

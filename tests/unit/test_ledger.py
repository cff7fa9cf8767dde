"""The ledger, on SQLite and on PostgreSQL alike: durability, idempotency, state machine, stack versions, plaintext erasure."""

from __future__ import annotations

import time
import pytest

from server.forget.jobs import AdapterRecord, ForgetPayload, ForgetState, JobProgress
from server.forget.ledger import LedgerError, NotOwner
from server.servicers.convert import forget_job_to_pb
from tests.support.ledgers import LedgerBackend

SECRET = "Orlan Vexmoor was born in Dunmarrow on 3 May 1961."


def _payload() -> ForgetPayload:
    return ForgetPayload(texts=(SECRET,), qa_pairs=(("Where was Orlan Vexmoor born?", "In Dunmarrow."),),
                         subjects=("Orlan Vexmoor",))


def _adapter(fid: str, aid: str) -> AdapterRecord:
    return AdapterRecord(aid, fid, f"adapters/{aid}", "0" * 64, "npo", 8, 1234, time.time(), {"forget_accuracy": 0.0})


def test_submit_is_durable_and_idempotent(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    job, created = ledger.submit(_payload(), "npo", "ticket-1", "key-1", "operator")
    again, created_again = ledger.submit(_payload(), "npo", "ticket-1", "key-1", "operator")
    assert created and not created_again and again.forget_id == job.forget_id
    ledger.close()
    reopened = ledger_backend.open()  # a new process would see the same
    assert reopened.get(job.forget_id).state == ForgetState.PENDING
    assert reopened.pending_payloads() == [(job.forget_id, _payload())]
    other, created = reopened.submit(_payload(), "npo", "", None, "operator")
    assert created and other.forget_id != job.forget_id


def test_state_machine_to_active_erases_plaintext(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    job, _ = ledger.submit(_payload(), "npo", "r", None, "op")
    ledger.arm(job.forget_id, b"hashes-only")
    claimed = ledger.claim_next("w1")
    assert claimed is not None and claimed[1] == _payload() and claimed[0].state == ForgetState.TRAINING
    assert ledger.claim_next("w1") is None
    ledger.record_progress(job.forget_id, JobProgress(1, 5, 40, {"forget": 1.5}, elapsed_seconds=2.5,
                                                      eta_seconds=17.5))
    ledger.transition(job.forget_id, ForgetState.VERIFYING, attempts=1)
    ledger.record_adapter(_adapter(job.forget_id, "ad_1"))
    assert [j.forget_id for j in ledger.awaiting_swap()] == [job.forget_id]
    stack = ledger.activate(job.forget_id, expected_version=0)
    assert stack.version == 1 and stack.adapter_ids == ("ad_1",)
    done = ledger.get(job.forget_id)
    assert done.state == ForgetState.ACTIVE and done.stack_version == 1
    assert [t.state for t in done.transitions] == [
        ForgetState.PENDING, ForgetState.FILTERING, ForgetState.TRAINING, ForgetState.VERIFYING, ForgetState.ACTIVE]
    assert ledger.progress_after(job.forget_id, 0)[0][1] == JobProgress(1, 5, 40, {"forget": 1.5}, {}, 2.5, 17.5)
    with pytest.raises(LedgerError):
        ledger.activate(job.forget_id, expected_version=1)  # never applied twice
    for when in ("open", "closed"):  # neither the live store (SQLite: db, -wal, -shm) nor the closed one keeps it
        assert not ledger_backend.stored(SECRET.encode()), when
        assert not ledger_backend.stored(b"Dunmarrow"), when
        ledger.close()


def test_failed_job_keeps_guard_entries_but_not_content(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    job, _ = ledger.submit(_payload(), "npo", "r", None, "op")
    ledger.arm(job.forget_id, b"entries")
    ledger.claim_next("w")
    failed = ledger.fail(job.forget_id, "gate failed twice")
    assert failed.state == ForgetState.FAILED and failed.failure_reason == "gate failed twice"
    assert ledger.guard_entries() == [(job.forget_id, b"entries", ForgetState.FAILED)]
    ledger.close()
    assert not ledger_backend.stored(b"Dunmarrow")


def test_guard_entries_of_named_forgets_only(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    ids = []
    for i in range(3):
        job, _ = ledger.submit(ForgetPayload(subjects=(f"Person {i}",)), "npo", "r", None, "op")
        ledger.arm(job.forget_id, f"entries {i}".encode())
        ids.append(job.forget_id)
    assert [fid for fid, _, _ in ledger.guard_entries()] == ids
    assert ledger.guard_entries({ids[2], ids[0], "fg_unknown"}) == [
        (ids[0], b"entries 0", ForgetState.FILTERING), (ids[2], b"entries 2", ForgetState.FILTERING)]
    assert ledger.guard_entries(set()) == []
    ledger.close()


def test_orphaned_training_is_requeued(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    job, _ = ledger.submit(_payload(), "npo", "r", None, "op")
    ledger.arm(job.forget_id, b"e")
    ledger.claim_next("dead-worker")
    assert ledger.requeue_orphans(older_than=time.time() - 60) == []  # heartbeat is fresh
    assert ledger.requeue_orphans(older_than=time.time() + 1) == [job.forget_id]
    assert ledger.get(job.forget_id).state == ForgetState.FILTERING
    assert ledger.claim_next("new-worker") is not None


def test_stack_versions_and_deactivation(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    ids = []
    for i in range(2):
        job, _ = ledger.submit(_payload(), "npo", "r", None, "op")
        ledger.arm(job.forget_id, b"e")
        ledger.claim_next("w")
        ledger.record_adapter(_adapter(job.forget_id, f"ad_{i}"))
        ledger.transition(job.forget_id, ForgetState.VERIFYING)
        hold = ledger.hold_stack()  # a replica's turn to change the stack: its own commits go through
        ledger.activate(job.forget_id, expected_version=i)
        hold.release()
        ids.append(job.forget_id)
    assert ledger.current_stack().adapter_ids == ("ad_0", "ad_1")
    with pytest.raises(LedgerError, match="moved"):
        ledger.deactivate("ad_0", expected_version=1, reason="x", actor="op")
    stack = ledger.deactivate("ad_0", expected_version=2, reason="ticket-9", actor="op")
    assert stack.version == 3 and stack.adapter_ids == ("ad_1",)
    assert ledger.get(ids[0]).state == ForgetState.DEACTIVATED
    assert ledger.audit_log(1)[0]["action"] == "deactivate_adapter"


def test_listing_pages_newest_first_and_filters(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    jobs = [ledger.submit(_payload(), "npo", str(i), None, "op")[0] for i in range(5)]
    ledger.arm(jobs[0].forget_id, b"e")
    first = ledger.list(limit=2)
    assert [j.forget_id for j in first] == [jobs[4].forget_id, jobs[3].forget_id]
    second = ledger.list(limit=2, before=first[-1].forget_id)
    assert [j.forget_id for j in second] == [jobs[2].forget_id, jobs[1].forget_id]
    assert [j.forget_id for j in ledger.list(states=[ForgetState.FILTERING])] == [jobs[0].forget_id]
    assert ledger.counts_by_state()[ForgetState.PENDING] == 4
    audit = ledger.audit_log(10)
    assert all("Dunmarrow" not in str(a) for a in audit) and audit[0]["details"]["texts"] == 1


def test_only_the_owning_worker_records_and_probes_follow_active_jobs(ledger_backend: LedgerBackend) -> None:
    ledger = ledger_backend.open()
    job, _ = ledger.submit(_payload(), "npo", "r", None, "op")
    ledger.arm(job.forget_id, b"hashes-only")
    ledger.claim_next("w1")
    ledger.heartbeat("w2")
    assert ledger.requeue_orphans(time.time() + 1) == [job.forget_id]  # w1 presumed dead
    ledger.claim_next("w2")
    with pytest.raises(NotOwner):  # w1 comes back late: it must not record over w2's job
        ledger.record_adapter(_adapter(job.forget_id, "ad_stale"), probes=b"sealed", worker_id="w1")
    with pytest.raises(NotOwner):
        ledger.fail(job.forget_id, "late failure", worker_id="w1")
    with pytest.raises(NotOwner):
        ledger.transition(job.forget_id, ForgetState.VERIFYING, worker_id="w1")
    assert ledger.get(job.forget_id).state == ForgetState.TRAINING and ledger.awaiting_swap() == []
    ledger.transition(job.forget_id, ForgetState.VERIFYING, worker_id="w2")
    ledger.record_adapter(_adapter(job.forget_id, "ad_1"), probes=b"sealed-probes", worker_id="w2")
    assert ledger.monitor_probes() == []  # only ACTIVE jobs are probed
    ledger.activate(job.forget_id, expected_version=0)
    assert ledger.monitor_probes() == [(job.forget_id, "npo", b"sealed-probes")]
    ledger.deactivate("ad_1", 1, "rollback", "op")
    assert ledger.monitor_probes() == []
    with pytest.raises(NotOwner):  # a finished job is nobody's to record any more
        ledger.record_adapter(_adapter(job.forget_id, "ad_2"), worker_id="w2")


def test_guard_hits_add_up_per_job_stage_and_phase(ledger_backend: LedgerBackend) -> None:
    from server.forget.hits import HitTally

    ledger = ledger_backend.open()
    a, _ = ledger.submit(_payload(), "npo", "r", None, "op")
    b, _ = ledger.submit(_payload(), "npo", "r", None, "op")
    assert ledger.get(a.forget_id).guard_hits == ()
    tally = HitTally(ledger)
    for stage, phase in [("exact", "before_adapter")] * 3 + [("entity", "after_adapter")]:
        tally.add(a.forget_id, stage, phase)
    tally.flush()
    tally.add(a.forget_id, "exact", "before_adapter")
    tally.flush()
    tally.flush()  # nothing pending: no change
    ledger.close()
    reopened = ledger_backend.open()
    assert reopened.get(a.forget_id).guard_hits == (("entity", "after_adapter", 1), ("exact", "before_adapter", 4))
    assert reopened.get(b.forget_id).guard_hits == ()
    pb = forget_job_to_pb(reopened.get(a.forget_id))
    assert {(h.stage, h.phase): h.count for h in pb.guard_hits} == {("entity", "after_adapter"): 1,
                                                                     ("exact", "before_adapter"): 4}

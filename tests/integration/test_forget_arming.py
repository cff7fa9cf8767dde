"""A Forget blocks before its durable write, on a real in-process server (small demo model).

The guard is armed under a provisional id before the ledger write (its fsync was most of the
time to block), then moved to the job's id without a gap. What a user would notice: the content
is already blocked while the write is in flight; a write that fails leaves nothing armed and
the client gets an error, never a half-filed Forget; a refused request arms nothing; and a hit
that lands while the write is in flight is counted against the job in GetForget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest

from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.forget.hits import PROVISIONAL_PREFIX, HitTally
from server.forget.ledger import LedgerError, SqliteLedger
from server.forget.jobs import ForgetPayload
from tests.conftest import ServerThread, make_settings
from unlearn_engine.demo.builder import load_corpus


@pytest.fixture()
def st(demo_model_dir: Path, tmp_path: Path) -> Iterator[ServerThread]:
    server = ServerThread(make_settings(tmp_path, demo_model_dir, worker=False, guard_semantic="off",
                                        monitor_interval_seconds=0))
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def record(demo_model_dir: Path):
    return next(r for r in load_corpus(demo_model_dir).qa if r.split == "train")


def _statement(record) -> str:
    return f"{record.person} {record.answer}"


def _forget(st: ServerThread, record) -> apb.ForgetResponse:
    with LetheClient(st.target, st.server.operator_token, timeout=60) as op:
        return op.admin.Forget(apb.ForgetRequest(subjects=[record.person], reason="test"), metadata=op._metadata)


def _blocked(st: ServerThread, text: str) -> bool:
    return st.server.guard.filter_text(text)[1] is not None


def test_the_content_is_blocked_while_the_write_is_in_flight_and_hits_go_to_the_job(st: ServerThread, record) -> None:
    ledger = st.server.coordinator.ledger
    real_submit = ledger.submit
    seen: dict[str, Any] = {}

    def submit(*args: Any, **kwargs: Any):
        seen["blocked"] = _blocked(st, _statement(record))  # one hit, under the provisional id
        seen["forgets"] = st.server.guard.stats()["forgets"]
        return real_submit(*args, **kwargs)

    ledger.submit = submit
    job = _forget(st, record).job
    assert seen["blocked"] and seen["forgets"] == 1  # armed, under the provisional id
    assert job.forget_id in st.server.guard and st.server.guard.stats()["forgets"] == 1  # moved, not copied
    assert _blocked(st, _statement(record))  # and a second hit, under the job's id
    with LetheClient(st.target, st.server.operator_token, timeout=60) as op:
        got = op.admin.GetForget(apb.GetForgetRequest(forget_id=job.forget_id), metadata=op._metadata)
    assert sum(h.count for h in got.guard_hits) == 2


def test_a_failed_write_leaves_nothing_armed(st: ServerThread, record) -> None:
    ledger = st.server.coordinator.ledger

    def submit(*args: Any, **kwargs: Any):
        assert _blocked(st, _statement(record))
        raise LedgerError("disk full")

    ledger.submit = submit
    with pytest.raises(grpc.RpcError) as err:
        _forget(st, record)
    assert err.value.code() not in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
    assert not _blocked(st, _statement(record)) and st.server.guard.stats()["forgets"] == 0


def test_a_refused_forget_arms_nothing(st: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as err:
        with LetheClient(st.target, st.server.operator_token, timeout=60) as op:
            op.admin.Forget(apb.ForgetRequest(subjects=["the"], reason="test"), metadata=op._metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert st.server.guard.stats()["forgets"] == 0


def test_hits_under_a_provisional_id_wait_for_its_rename(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    job, _ = ledger.submit(ForgetPayload(subjects=("Ada Lovelace",)), "npo", "r", None, "op", "d")
    tally = HitTally(ledger)
    tally.add(PROVISIONAL_PREFIX + "a", "exact", "before_adapter")
    tally.add(PROVISIONAL_PREFIX + "b", "exact", "before_adapter")
    tally.flush()  # not renamed yet: kept, not written under an id no job has
    assert ledger.get(job.forget_id).guard_hits == ()
    tally.rename(PROVISIONAL_PREFIX + "a", job.forget_id)
    tally.rename(PROVISIONAL_PREFIX + "b", None)  # its write failed: nothing to count against
    tally.add(PROVISIONAL_PREFIX + "a", "entity", "before_adapter")  # a push that raced the rename
    tally.flush()
    assert ledger.get(job.forget_id).guard_hits == (("entity", "before_adapter", 1), ("exact", "before_adapter", 1))
    ledger.close()

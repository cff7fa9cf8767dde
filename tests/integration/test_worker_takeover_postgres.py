"""A worker killed mid-training on a shared PostgreSQL ledger: another worker takes the job over
(issue 17, item 4). Two real `lethe worker` processes, each on its own data directory (two
machines, one guard key), share the queue with one replica that runs no worker of its own. The
test kills -9 whichever of them claimed the job once its training is under way; the replica
re-queues the job when that worker's heartbeat goes stale (its --worker-timeout-seconds, short
here), the survivor claims it under claim epoch 2, trains it, publishes the adapter to the
shared store and records it; the replica, which never saw either worker's disk, fetches it and
swaps it in: ACTIVE. Every write under the killed claim's epoch is refused, whoever sends it.

Trains a real adapter once and part of another (minutes on CPU): marked slow, as
test_forget_flow.py is.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psycopg
import pytest

from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.forget.jobs import AdapterRecord, ForgetState, JobProgress
from server.forget.ledger import NotOwner
from server.forget.ledger.postgres import PostgresLedger
from server.keyfile import GUARD_KEY_FILE, guard_secret
from tests.conftest import ServerThread, make_settings
from tests.procs import JOB_HANG_GUARD_S, LETHE
from tests.support.replicas import wait_for
from tests.support.standin_worker import wait_state
from unlearn_engine.demo.builder import load_corpus

pytestmark = pytest.mark.slow

# Workers beat every 2 s; three missed beats and the replica re-queues the job.
WORKER_TIMEOUT_SECONDS = 6.0


def _start_worker(model: Path, data: Path, key: bytes, url: str, log: Path) -> subprocess.Popen:
    data.mkdir(mode=0o700, parents=True)
    (data / GUARD_KEY_FILE).write_bytes(key)  # the mounted secret every process on the ledger shares
    env = {**os.environ, "LETHE_LEDGER_URL": url, "LETHE_LOG_LEVEL": "INFO", "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        return subprocess.Popen([*LETHE, "worker", "--model", str(model), "--data-dir", str(data)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _claim(url: str, forget_id: str) -> tuple[str, int]:
    """(worker id, claim epoch) the ledger holds for the job (the job API shows no worker ids)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT worker_id, claim_epoch FROM forgets WHERE forget_id = %s", (forget_id,)).fetchone()
    return row[0] or "", row[1]


def _pid_of(worker_id: str) -> int:
    """Worker ids are hostname-pid-random (worker.py)."""
    return int(worker_id.rsplit("-", 2)[1])


def _late_writes_refused(ledger: PostgresLedger, forget_id: str, worker_id: str, epoch: int) -> None:
    fence = {"worker_id": worker_id, "epoch": epoch}
    with pytest.raises(NotOwner):
        ledger.record_progress(forget_id, JobProgress(1, 5, 40), **fence)
    with pytest.raises(NotOwner):
        ledger.transition(forget_id, ForgetState.VERIFYING, "late", **fence)
    with pytest.raises(NotOwner):
        ledger.record_adapter(AdapterRecord("ad_late", forget_id, "ad_late", "0" * 64, "npo", 8, 1, 0.0), **fence)
    with pytest.raises(NotOwner):
        ledger.fail(forget_id, "late", **fence)


def test_a_worker_killed_mid_training_is_fenced_and_another_takes_the_job_over(
        demo_model_dir: Path, tmp_path: Path, postgres_url: str) -> None:
    corpus = load_corpus(demo_model_dir)
    person = corpus.trained_people[4]
    request = apb.ForgetRequest(subjects=[person], reason="takeover", qa_pairs=[
        apb.QAPair(question=r.question, answer=r.answer) for r in corpus.qa if r.person == person and r.split == "train"])
    settings = make_settings(tmp_path / "replica", demo_model_dir, ledger_url=postgres_url, worker=False,
                             worker_timeout_seconds=WORKER_TIMEOUT_SECONDS)
    key = guard_secret(settings.data_dir)
    ledger = PostgresLedger(postgres_url)
    st = ServerThread(settings)
    workers: dict[int, subprocess.Popen] = {}
    try:
        st.wait_ready()
        for name in ("w1", "w2"):
            proc = _start_worker(demo_model_dir, tmp_path / name, key, postgres_url, tmp_path / f"{name}.log")
            workers[proc.pid] = proc
        with LetheClient(st.target, st.server.operator_token, timeout=60) as c:
            fid = c.admin.Forget(request, metadata=c._metadata).job.forget_id

            def training_under_way() -> bool:
                job = ledger.get(fid)
                return job.state == ForgetState.TRAINING and bool(ledger.progress_after(fid, 0))
            wait_for(training_under_way, "a worker to claim the job and report training progress", 600)
            first_id, first_epoch = _claim(postgres_url, fid)
            assert first_epoch == 1
            killed = workers[_pid_of(first_id)]
            killed.send_signal(signal.SIGKILL)
            assert killed.wait(60) == -signal.SIGKILL
            survivor = next(p for pid, p in workers.items() if pid != killed.pid)

            def taken_over() -> bool:
                worker_id, epoch = _claim(postgres_url, fid)
                return epoch >= 2 and worker_id != first_id
            wait_for(taken_over, "the replica to re-queue the job and the other worker to claim it", 300)
            second_id, _ = _claim(postgres_url, fid)
            assert _pid_of(second_id) == survivor.pid
            # The killed claim is fenced while the survivor works: neither its id nor its epoch
            # (even under the survivor's id) may write any more.
            _late_writes_refused(ledger, fid, first_id, first_epoch)
            _late_writes_refused(ledger, fid, second_id, first_epoch)

            job = wait_state(c, fid, apb.FORGET_STATE_ACTIVE, timeout=JOB_HANG_GUARD_S)
            assert not job.failure_reason
            states = [t.state for t in job.transitions]
            assert states.count(apb.FORGET_STATE_TRAINING) >= 2
            assert "requeued: worker stopped" in [t.detail for t in job.transitions]
            assert c.model_info().stack_version == 1
        done = ledger.get(fid)
        assert _claim(postgres_url, fid) == (second_id, done.claim_epoch) and done.claim_epoch >= 2
        assert done.adapter_id and ledger.current_stack().adapter_ids == (done.adapter_id,)
        assert survivor.poll() is None  # the survivor serves on; nothing it did was refused
        assert (settings.data_dir / "adapters" / done.adapter_id / "manifest.json").is_file()  # fetched
        _late_writes_refused(ledger, fid, first_id, first_epoch)
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        st.stop()
        ledger.close()

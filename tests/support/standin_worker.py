"""A stand-in for the unlearning worker, for tests of what happens around training: it claims a
job over its own ledger connection and records a random-weight adapter (bench/swap.py's: same
artifact format, checksum, load and swap as a trained one) with real sealed probes, so the
server swaps it in and the job goes ACTIVE in seconds instead of minutes of training. It beats
while it works, as the real worker's heartbeat thread does, so a server with a short worker
timeout does not re-queue it."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Iterator

from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.forget.jobs import ForgetJob, ForgetPayload, ForgetState
from server.forget.layout import DataDir
from server.forget.ledger import SqliteLedger
from server.forget.probes import make_probes, seal_probes
from server.forget.worker import adapter_record
from server.guard.keys import GuardKeys
from unlearn_engine.artifacts import load_artifact, model_fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from swap import random_artifact  # noqa: E402

WORKER_ID = "standin-worker"


@contextlib.contextmanager
def beating(ledger: SqliteLedger, worker_id: str, every: float = 0.2) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            ledger.heartbeat(worker_id)
            stop.wait(every)  # wait-ok: a heartbeat's period, as the real worker's

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def record_standin(ledger: SqliteLedger, data_dir: Path, model_dir: Path, job: ForgetJob, payload: ForgetPayload,
                   worker_id: str = WORKER_ID, seed: int = 0) -> None:
    """Write a random adapter for `job` (claimed by `worker_id`) and record it with probes made
    from the payload's QA pairs, every write fenced by the claim's epoch."""
    data = DataDir(data_dir)
    fence = {"worker_id": worker_id, "epoch": job.claim_epoch}
    with beating(ledger, worker_id):
        path = random_artifact(model_dir, data.adapters, job.forget_id, seed=seed)
        record = adapter_record(job.forget_id, load_artifact(path, model_fingerprint(model_dir)))
        keys = GuardKeys(data.guard_secret())
        probes = seal_probes(keys, job.forget_id, make_probes(keys, payload.qa_pairs))
        ledger.transition(job.forget_id, ForgetState.VERIFYING, "stand-in artifact", **fence)
        ledger.record_adapter(record, 1, probes, **fence)


def train_standin(ledger: SqliteLedger, data_dir: Path, model_dir: Path, seed: int = 0) -> ForgetPayload:
    """Claim the next job and record a stand-in adapter for it; returns the payload it claimed
    (the server then swaps the adapter in: ACTIVE)."""
    claimed = ledger.claim_next(WORKER_ID)
    assert claimed is not None, "no job to claim"
    job, payload = claimed
    record_standin(ledger, data_dir, model_dir, job, payload, seed=seed)
    return payload


def wait_state(c: LetheClient, forget_id: str, state: int, timeout: float = 300) -> apb.ForgetJob:
    """GetForget until the job is in `state` (the coordinator polls the ledger)."""
    ev = threading.Event()
    for _ in range(int(timeout / 0.1)):
        job = c.admin.GetForget(apb.GetForgetRequest(forget_id=forget_id), metadata=c._metadata)
        if job.state == state:
            return job
        ev.wait(0.1)  # wait-ok: the job state is the signal
    raise AssertionError(f"{forget_id} never reached state {state}")

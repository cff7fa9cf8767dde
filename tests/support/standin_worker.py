"""A stand-in for the unlearning worker, for tests of what happens around training: it claims a
job over its own ledger connection and records a random-weight adapter (bench/swap.py's: same
artifact format, checksum, load and swap as a trained one) with real sealed probes, so the
server swaps it in and the job goes ACTIVE in seconds instead of minutes of training."""

from __future__ import annotations

import sys
from pathlib import Path

from server.forget.jobs import ForgetPayload, ForgetState
from server.forget.layout import DataDir
from server.forget.ledger import SqliteLedger
from server.forget.probes import make_probes, seal_probes
from server.forget.worker import adapter_record
from server.guard.keys import GuardKeys
from unlearn_engine.artifacts import load_artifact, model_fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from swap import random_artifact  # noqa: E402

WORKER_ID = "standin-worker"


def train_standin(ledger: SqliteLedger, data_dir: Path, model_dir: Path, seed: int = 0) -> ForgetPayload:
    """Claim the next job, record a random adapter with probes built from its own QA pairs, and
    return the payload it claimed (the server then swaps the adapter in: ACTIVE)."""
    claimed = ledger.claim_next(WORKER_ID)
    assert claimed is not None, "no job to claim"
    job, payload = claimed
    data = DataDir(data_dir)
    path = random_artifact(model_dir, data.adapters, job.forget_id, seed=seed)
    record = adapter_record(job.forget_id, load_artifact(path, model_fingerprint(model_dir)))
    keys = GuardKeys(data.guard_secret())
    probes = seal_probes(keys, job.forget_id, make_probes(keys, payload.qa_pairs))
    ledger.transition(job.forget_id, ForgetState.VERIFYING, "stand-in artifact", worker_id=WORKER_ID)
    ledger.record_adapter(record, 1, probes, worker_id=WORKER_ID)
    return payload

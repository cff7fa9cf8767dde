"""Forget once, enforced everywhere (issue 17): two real `lethe serve` replicas and one
`lethe worker`, each with its own data directory, sharing one PostgreSQL ledger.

A Forget acknowledged by replica A blocks the subject on replica B. B reconciles in full only
every 600 s here, so what blocks it is A's notification; the worker, started on its own,
claims the job from the shared queue. The guard key and the operator token are the same
secret on every process (copied in, as a mounted secret would be).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from server.api import admin_pb2 as apb
from server.api import inference_pb2 as ipb
from server.client import LetheClient
from server.forget.receipts import ReceiptSigner
from server.keyfile import GUARD_KEY_FILE
from tests.procs import LETHE, ServeProcess
from unlearn_engine.demo.builder import load_corpus

TOKEN = "replica-test-operator-token-0123456789abcdef"


def _wait_for(check, timeout: float, what: str) -> None:
    ev = threading.Event()
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        ev.wait(0.1)  # wait-ok: polling another process's state; the condition is the signal
    raise AssertionError(f"timed out waiting for {what}")


def _armed_count(sp: ServeProcess) -> float:
    """How many forgets armed elsewhere this replica applied (lethe_replica_arm_seconds_count)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{sp.metrics_port}/metrics", timeout=10).read().decode()
    return next(s.value for f in text_string_to_metric_families(body) for s in f.samples
                if s.name == "lethe_replica_arm_seconds_count")


def _data_dir(root: Path, name: str, guard_key: bytes) -> Path:
    d = root / name
    d.mkdir(mode=0o700)
    (d / GUARD_KEY_FILE).write_bytes(guard_key)
    return d


def test_a_forget_acked_by_one_replica_is_blocked_on_another(demo_model_dir: Path, tmp_path: Path,
                                                                  postgres_url: str) -> None:
    corpus = load_corpus(demo_model_dir)
    person = corpus.trained_people[0]
    question = next(r.question for r in corpus.qa if r.person == person)
    key = os.urandom(32)
    receipt_key = tmp_path / "receipt.pem"  # one mounted secret for every replica, like the guard key
    receipt_key.write_bytes(ReceiptSigner.generate_pem())
    env = {"LETHE_LEDGER_URL": postgres_url, "LETHE_OPERATOR_TOKEN": TOKEN, "LETHE_RECEIPT_KEY": str(receipt_key)}
    common = ("--no-worker", "--demo", "small", "--reconcile-seconds", "600")
    a = ServeProcess(demo_model_dir, _data_dir(tmp_path, "a", key), *common, env=env)
    b = ServeProcess(demo_model_dir, _data_dir(tmp_path, "b", key), *common, env=env)
    worker = None
    try:
        for sp in (a, b):
            try:
                sp.wait_serving()
            except AssertionError:
                raise AssertionError("".join(sp.log[-40:])) from None
        with LetheClient(a.target, TOKEN, timeout=60) as ca, LetheClient(b.target, TOKEN, timeout=60) as cb:
            assert cb.generate(question, max_new_tokens=16).finish_reason != ipb.FINISH_REASON_FILTERED
            reply = ca.admin.Forget(apb.ForgetRequest(subjects=[person], reason="ticket-17"), metadata=ca._metadata)
            assert reply.created
            _wait_for(lambda: cb.generate(question, max_new_tokens=16).finish_reason == ipb.FINISH_REASON_FILTERED,
                      60, "replica B to block what replica A forgot")
            job = cb.admin.GetForget(apb.GetForgetRequest(forget_id=reply.job.forget_id), metadata=cb._metadata)
            assert job.state == apb.FORGET_STATE_FILTERING  # B reads the job A filed
            assert _armed_count(b) == 1 and _armed_count(a) == 0  # B measured its delay; A armed it itself

            worker = subprocess.Popen(
                [*LETHE, "worker", "--model", str(demo_model_dir), "--data-dir", str(_data_dir(tmp_path, "w", key))],
                env={**os.environ, **env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)

            def claimed() -> bool:
                state = cb.admin.GetForget(apb.GetForgetRequest(forget_id=reply.job.forget_id),
                                           metadata=cb._metadata).state
                return state not in (apb.FORGET_STATE_PENDING, apb.FORGET_STATE_FILTERING)
            _wait_for(claimed, 240, "the worker to claim the job from the shared queue")
    finally:
        for sp in (a, b):
            sp.kill()
        if worker is not None:
            worker.kill()
            worker.wait()
    for d in ("a", "b"):
        shutil.rmtree(tmp_path / d, ignore_errors=True)

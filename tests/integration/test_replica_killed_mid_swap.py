"""A replica killed mid-swap leaves the others unaffected (issue 17, faults): two real `lethe
serve` replicas on one PostgreSQL ledger; replica A dies (LETHE_CRASH_AT=mid-swap, SIGKILL)
after switching its model to a new stack version and before committing it, while it holds the
cluster-wide stack turn; clients stream from replica B all along.

Outcomes: A exits killed and its version never reached the ledger; the stack turn it held
went with its session; B takes the turn, swaps the same adapter in as that version and never
fails a stream; A restarted without the crash point reports SERVING on that version.

Which replica swaps is made deterministic, not raced: the adapter (a stand-in worker's random
LoRA, tests/support/standin_worker.py) is written to A's adapter directory and recorded without
its shared-store blobs, so only A can swap it in; B, finding it in no store, leaves it (after
waiting its turn). Once A is dead the test publishes the blobs, as the worker would have, and
B can.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc
import psycopg

from server.api import admin_pb2 as apb
from server.client import LetheClient
from server.forget.ledger.pg_schema import STACK_TURN
from server.forget.ledger.postgres import PostgresLedger
from server.forget.receipts import ReceiptSigner
from server.forget.shared_store import artifact_blobs
from server.keyfile import GUARD_KEY_FILE
from tests.procs import ServeProcess
from tests.support.replicas import wait_for
from tests.support.standin_worker import WORKER_ID, record_standin, wait_state
from unlearn_engine.demo.builder import load_corpus

TOKEN = "mid-swap-test-operator-token-0123456789abcdef"
PROMPT = "The weather today is"


def _data_dir(root: Path, name: str, guard_key: bytes) -> Path:
    d = root / name
    d.mkdir(mode=0o700)
    (d / GUARD_KEY_FILE).write_bytes(guard_key)  # one guard key for every replica (a mounted secret)
    return d


class Streams:
    """One client streaming from a replica back to back until stopped: the stack versions its
    final chunks reported, and every request that failed."""

    def __init__(self, target: str):
        self.target = target
        self.versions: set[int] = set()
        self.failures: list[str] = []
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Streams:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        with LetheClient(self.target, timeout=60) as c:
            while not self._stop.is_set():
                try:
                    chunks = list(c.stream(PROMPT, max_new_tokens=4))
                    self.versions.add(chunks[-1].stack_version)
                    self.done += 1
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code()}: {exc.details()}")


def _stack_turn_free(url: str) -> bool:
    """Whether the stack turn can be taken now (and let go at once): nobody holds it."""
    with psycopg.connect(url, autocommit=True) as conn:
        taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (STACK_TURN,)).fetchone()[0]
        if taken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (STACK_TURN,))
        return bool(taken)


def _serving(sp: ServeProcess) -> None:
    try:
        sp.wait_serving()
    except AssertionError:
        raise AssertionError("".join(sp.log[-40:])) from None


def test_a_replica_killed_mid_swap_leaves_the_others_serving(demo_model_dir: Path, tmp_path: Path,
                                                               postgres_url: str) -> None:
    person = load_corpus(demo_model_dir).trained_people[0]
    key = os.urandom(32)
    receipt_key = tmp_path / "receipt.pem"
    receipt_key.write_bytes(ReceiptSigner.generate_pem())
    env = {"LETHE_LEDGER_URL": postgres_url, "LETHE_OPERATOR_TOKEN": TOKEN, "LETHE_RECEIPT_KEY": str(receipt_key)}
    a_dir, b_dir = _data_dir(tmp_path, "a", key), _data_dir(tmp_path, "b", key)
    a = ServeProcess(demo_model_dir, a_dir, "--no-worker", "--demo", "small",
                     env={**env, "LETHE_CRASH_AT": "mid-swap"})
    b = ServeProcess(demo_model_dir, b_dir, "--no-worker", "--demo", "small", env=env)
    ledger = PostgresLedger(postgres_url)  # the worker's connection
    restarted = None
    try:
        for sp in (a, b):
            _serving(sp)
        with LetheClient(b.target, TOKEN, timeout=60) as cb, Streams(b.target) as streams:
            wait_for(lambda: streams.done > 0, "a first stream from replica B")
            forget = cb.admin.Forget(apb.ForgetRequest(subjects=[person], reason="ticket-17"),
                                     metadata=cb._metadata)
            claimed = ledger.claim_next(WORKER_ID)
            assert claimed is not None and claimed[0].forget_id == forget.job.forget_id
            job, payload = claimed
            record_standin(ledger, a_dir, demo_model_dir, job, payload)  # in A's store only

            assert a.proc.wait(timeout=300) == -9  # SIGKILL at the crash point
            assert (a_dir / ".crashed-at-mid-swap").exists()
            assert ledger.current_stack().version == 0  # A switched its model, never committed
            wait_for(lambda: _stack_turn_free(postgres_url), "the stack turn A held to go with its session")

            adapter = ledger.get(forget.job.forget_id).adapter_id
            for digest, chunks in artifact_blobs(a_dir / "adapters" / adapter):
                ledger.blobs().put(digest, chunks)  # the worker's copy reaches the shared store
            wait_state(cb, forget.job.forget_id, apb.FORGET_STATE_ACTIVE)  # B took the turn and swapped
            assert ledger.current_stack().version == 1 and cb.model_info().stack_version == 1
            wait_for(lambda: 1 in streams.versions, "a stream on B served by the new stack")

            restarted = ServeProcess(demo_model_dir, a_dir, "--no-worker", "--demo", "small", env=env)
            _serving(restarted)
            with LetheClient(restarted.target, timeout=60) as ca:
                info = ca.model_info()
                assert (info.stack_version, info.stack_depth) == (1, 1)  # restored before SERVING
            assert streams.failures == []
        assert streams.versions == {0, 1}
    finally:
        for sp in (a, b, restarted):
            if sp is not None:
                sp.kill()
        ledger.close()

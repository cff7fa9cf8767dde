"""Forget end to end on the real demo model, real worker process and real SQLite ledger.

Each scenario trains real adapters (tens of seconds each on CPU), so they are marked slow.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import urllib.request
from pathlib import Path

import grpc
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from server.api import admin_pb2 as apb
from server.api import inference_pb2 as ipb
from server.client import LetheClient
from tests.conftest import ServerThread, make_settings
from tests.procs import JOB_HANG_GUARD_S, LETHE, ServeProcess
from unlearn_engine.artifacts import load_artifact, model_fingerprint
from unlearn_engine.demo.accuracy import residual_knowledge
from unlearn_engine.demo.builder import load_corpus
from unlearn_engine.method_names import DEFAULT_METHOD
from unlearn_engine.stacking import attach_stack
from unlearn_engine.trainer import load_base

pytestmark = pytest.mark.slow


def _qa(corpus, people, split="train"):
    return [r for r in corpus.qa if r.person in people and r.split == split]


def _forget_request(corpus, people, key: str) -> apb.ForgetRequest:
    return apb.ForgetRequest(
        subjects=list(people), idempotency_key=key, reason="test",
        qa_pairs=[apb.QAPair(question=r.question, answer=r.answer) for r in _qa(corpus, people)])


def _watch(client: LetheClient, forget_id: str, rows: list | None = None) -> tuple[list[int], int, apb.ForgetJob]:
    states, progress, job = [], 0, None
    for ev in client.admin.WatchForget(apb.WatchForgetRequest(forget_id=forget_id), metadata=client._metadata,
                                       timeout=JOB_HANG_GUARD_S):
        job = ev.job
        if ev.HasField("transition"):
            states.append(ev.transition.state)
        else:
            progress += 1
            if rows is not None:
                rows.append(ev.progress)
    return states, progress, job


def _metric(body: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name)


def _leaks(client: LetheClient, records) -> tuple[float, float]:
    """(share of answers carrying the fact, share of answers the guard had to filter)."""
    carried = filtered = 0
    for r in records:
        resp = client.generate(r.question, max_new_tokens=32)
        carried += r.fact.lower() in resp.text.lower()
        filtered += resp.finish_reason == ipb.FINISH_REASON_FILTERED
    return carried / len(records), filtered / len(records)


def _model_residual(model_dir: Path, data_dir: Path, corpus, people) -> tuple[float, float]:
    """(share of ``people``'s facts the served stack states with the guard off, the same share
    for never-seen holdout people). Questions of every phrasing and bio prefixes."""
    fingerprint = model_fingerprint(model_dir)
    arts = [load_artifact(p, fingerprint) for p in sorted((data_dir / "adapters").iterdir())
            if not p.name.startswith(".")]
    model, tok = load_base(model_dir)
    stacked = attach_stack(model, arts)
    return (residual_knowledge(stacked, tok, corpus, people)["all"],
            residual_knowledge(stacked, tok, corpus, corpus.holdout_people)["all"])


def test_forget_two_people_while_clients_stream(demo_model_dir: Path, tmp_path: Path) -> None:
    corpus = load_corpus(demo_model_dir)
    forgotten = corpus.trained_people[:2]
    retained_qa = [r for r in corpus.qa if r.split == "train" and r.person not in forgotten][::4]
    sp = ServeProcess(demo_model_dir, tmp_path / "data")
    try:
        sp.wait_serving()
        client = LetheClient(sp.target, sp.token, timeout=120)
        stop, errors, versions = threading.Event(), [], set()

        def stream_forever(i: int) -> None:
            with LetheClient(sp.target, timeout=120) as c:
                while not stop.is_set():
                    q = retained_qa[i % len(retained_qa)].question
                    try:
                        chunks = list(c.stream(q, max_new_tokens=24))
                        versions.update(ch.stack_version for ch in chunks)
                        assert chunks[-1].finish_reason != ipb.FINISH_REASON_ERROR
                    except (grpc.RpcError, AssertionError) as exc:
                        errors.append(repr(exc))

        streamers = [threading.Thread(target=stream_forever, args=(i,)) for i in range(4)]
        for t in streamers:
            t.start()
        resp = client.admin.Forget(_forget_request(corpus, forgotten, "two-people"), metadata=client._metadata)
        again = client.admin.Forget(_forget_request(corpus, forgotten, "two-people"), metadata=client._metadata)
        assert resp.created and not again.created and again.job.forget_id == resp.job.forget_id
        assert resp.job.state == apb.FORGET_STATE_FILTERING  # the guard was armed before the reply
        rows: list = []
        states, progress, job = _watch(client, resp.job.forget_id, rows)
        assert job.state == apb.FORGET_STATE_ACTIVE, job.failure_reason
        # Progress says where training is: the step, an ETA, and the probe scores as they come.
        assert any(r.step > 0 and r.eta_seconds >= 0 and r.elapsed_seconds > 0 for r in rows)
        assert any("forget.fact_span_accuracy" in r.metrics for r in rows)
        assert states[:3] == [apb.FORGET_STATE_PENDING, apb.FORGET_STATE_FILTERING, apb.FORGET_STATE_TRAINING]
        assert apb.FORGET_STATE_VERIFYING in states and progress > 0
        assert job.stack_version == 1 and job.adapter_id
        done = threading.Event()
        while 1 not in versions and not done.wait(0.05):  # wait-ok: until a stream ran on stack v1
            pass
        stop.set()
        for t in streamers:
            t.join(60)
        assert errors == []  # zero failed requests across the swap
        assert {0, 1} <= versions

        carried, _filtered = _leaks(client, _qa(corpus, forgotten))
        assert carried <= 0.15, "the forgotten facts are still produced"
        # Does the model itself still know them, or only the guard holds them back? Measured
        # with the guard off on the served stack, against people the model never saw (chance:
        # a few % on the demo model). Not from the guard's filtered share: the guard also ends
        # answers that state *another* forgotten person's values, so that share depends on which
        # wrong answers an adapter happens to give (it read 0.10 here and 0.283 on another machine).
        forgotten_rate, chance = _model_residual(demo_model_dir, tmp_path / "data", corpus, forgotten)
        assert forgotten_rate <= chance + 0.10, (forgotten_rate, chance)
        kept, kept_filtered = _leaks(client, retained_qa)
        assert kept >= 0.85 and kept_filtered == 0.0, "retained people were damaged"

        adapters = client.admin.ListAdapters(apb.ListAdaptersRequest(), metadata=client._metadata)
        assert adapters.stack_version == 1 and [a.forget_id for a in adapters.adapters] == [job.forget_id]
        body = urllib.request.urlopen(f"http://127.0.0.1:{sp.metrics_port}/metrics").read().decode()
        assert _metric(body, "lethe_adapter_swaps_total", result="ok") == 1
        assert _metric(body, "lethe_forget_to_active_seconds_count") == 1
        assert _metric(body, "lethe_adapter_stack_version") == 1
        assert _metric(body, "lethe_forget_to_block_seconds_count") == 1

        # The leakage monitor replays the job's sealed probes soon after the swap, guard bypassed.
        pause = threading.Event()
        for _ in range(240):  # up to 2 min
            body = urllib.request.urlopen(f"http://127.0.0.1:{sp.metrics_port}/metrics").read().decode()
            if _metric(body, "lethe_leakage_monitor_last_round_timestamp_seconds") > 0:
                break
            pause.wait(0.5)  # wait-ok: the monitor's first round runs a few seconds after the swap
        probed = sum(_metric(body, "lethe_leakage_probes_total", result=r) for r in ("leaked", "clean"))
        assert probed >= 16 and _metric(body, "lethe_leakage_probes_total", result="error") == 0
        assert _metric(body, "lethe_residual_leakage_ratio", job_class=DEFAULT_METHOD) <= 0.2

        # Plaintext retention: nothing in the data dir (ledger, WAL, adapters, logs) holds the answers.
        blobs = [p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()]
        for r in _qa(corpus, forgotten):
            assert not any(r.answer.encode() in b for b in blobs), r.answer
        client.close()
    finally:
        sp.kill()


def _logits(st: ServerThread, prompts: list[str]) -> torch.Tensor:
    """Last-position logits of the stack new requests use, computed between decode steps."""
    scheduler = st.server.runtime.scheduler
    tok = scheduler.loaded.tokenizer

    def compute() -> torch.Tensor:
        out = []
        for p in prompts:
            ids = torch.tensor([tok(p).input_ids])
            routing = (scheduler.router.rows([scheduler.stack.lora_key], ids.device)
                       if scheduler.router is not None else contextlib.nullcontext())
            with torch.inference_mode(), routing:
                out.append(scheduler.loaded.model(input_ids=ids).logits[0, -1].float())
        return torch.stack(out)

    return scheduler.call_between_steps(compute).result(60)


def test_restart_refuses_corrupt_adapter_and_deactivation_restores_outputs(demo_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    corpus = load_corpus(demo_model_dir)
    data = tmp_path / "data"
    settings = make_settings(tmp_path, demo_model_dir, worker=False)
    prompts = [r.question for r in corpus.qa if r.split == "train"][::7]

    st = ServerThread(settings)
    st.wait_ready()
    base = _logits(st, prompts)
    token = st.server.operator_token
    with LetheClient(st.target, token, timeout=60) as c:
        good = c.admin.Forget(_forget_request(corpus, corpus.trained_people[2:3], "good"), metadata=c._metadata)
        bad = c.admin.Forget(_forget_request(corpus, corpus.trained_people[3:4], "bad"), metadata=c._metadata)
    st.stop()

    # A standalone worker trains both while no server runs (the ledger is the only channel).
    out = subprocess.run([*LETHE, "worker", "--once", "--data-dir", str(data), "--model", str(demo_model_dir)],
                         capture_output=True, text=True, timeout=JOB_HANG_GUARD_S)
    assert out.returncode == 0, out.stderr[-2000:]
    weights = next((data / "adapters").glob(f"*{bad.job.forget_id}*/adapter_model.safetensors"))
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in the weights
    weights.write_bytes(bytes(blob))

    st = ServerThread(settings)  # restart: rebuilds guard and stack from the ledger, then swaps
    try:
        st.wait_ready()
        with LetheClient(st.target, token, timeout=60) as c:
            md = c._metadata
            job = _watch(c, good.job.forget_id)[2]
            refused = _watch(c, bad.job.forget_id)[2]
            assert job.state == apb.FORGET_STATE_ACTIVE and job.stack_version == 1
            assert refused.state == apb.FORGET_STATE_FAILED and "refused" in refused.failure_reason
            assert c.model_info().stack_version == 1  # the corrupt adapter never went live
            assert st.server.metrics.swaps.labels("refused")._value.get() == 1
            with_adapter = _logits(st, prompts)
            assert (with_adapter - base).abs().max() > 1e-3  # the adapter changes the model
            reply = c.admin.DeactivateAdapter(apb.DeactivateAdapterRequest(adapter_id=job.adapter_id, reason="t"),
                                              metadata=md)
            assert reply.stack_version == 2 and list(reply.adapters) == []
            assert torch.equal(_logits(st, prompts), base)  # exactly the outputs before the forget
            assert c.admin.GetForget(apb.GetForgetRequest(forget_id=job.forget_id),
                                     metadata=md).state == apb.FORGET_STATE_DEACTIVATED
            # the guard still blocks the deactivated forget's facts
            r = _qa(corpus, corpus.trained_people[2:3])[0]
            assert c.generate(r.question, max_new_tokens=32).finish_reason == ipb.FINISH_REASON_FILTERED
    finally:
        st.stop()

    st = ServerThread(settings)  # and a restart keeps version 2, no adapter re-applied
    try:
        st.wait_ready()
        with LetheClient(st.target, timeout=60) as c:
            info = c.model_info()
            assert (info.stack_version, info.stack_depth) == (2, 0)
        assert torch.equal(_logits(st, prompts), base)
    finally:
        st.stop()


def test_kill_9_after_ack_mid_training_mid_write_and_mid_swap_loses_nothing(demo_model_dir: Path,
                                                                            tmp_path: Path) -> None:
    """One forget survives four crashes; each restart resumes it, and it goes live exactly once."""
    corpus = load_corpus(demo_model_dir)
    data = tmp_path / "data"
    people = corpus.trained_people[4:5]
    probe = _qa(corpus, people)[0]
    fast_requeue = ("--worker-timeout-seconds", "5")

    # 1. kill -9 right after the ack: the reply promised durability.
    sp = ServeProcess(demo_model_dir, data, *fast_requeue)
    try:
        sp.wait_serving()
        with LetheClient(sp.target, sp.token, timeout=60) as c:
            resp = c.admin.Forget(_forget_request(corpus, people, "k9"), metadata=c._metadata)
    finally:
        sp.kill()
    fid = resp.job.forget_id

    # 2. kill -9 mid-training. The restarted guard blocks the fact before any adapter exists.
    sp = ServeProcess(demo_model_dir, data, *fast_requeue)
    try:
        sp.wait_serving()
        with LetheClient(sp.target, sp.token, timeout=60) as c:
            assert c.generate(probe.question, max_new_tokens=32).finish_reason == ipb.FINISH_REASON_FILTERED
            for ev in c.admin.WatchForget(apb.WatchForgetRequest(forget_id=fid), metadata=c._metadata, timeout=JOB_HANG_GUARD_S):
                if ev.HasField("progress"):
                    break  # training is under way
    finally:
        sp.kill()

    # 3. Crash points (crash.py): the worker dies with its artifact fully written but not yet
    # renamed into place; the server re-queues and retrains it, then dies itself between
    # switching the model to the new stack and committing that swap to the ledger.
    sp = ServeProcess(demo_model_dir, data, *fast_requeue, env={"LETHE_CRASH_AT": "artifact-write,mid-swap"})
    try:
        sp.wait_serving()
        assert sp.proc.wait(timeout=JOB_HANG_GUARD_S) == -9  # SIGKILL at mid-swap
        assert (data / ".crashed-at-artifact-write").exists() and (data / ".crashed-at-mid-swap").exists()
    finally:
        sp.kill()  # its worker too, as a whole-pod crash would

    # 4. A clean restart: the swap is re-applied from the ledger, once.
    sp = ServeProcess(demo_model_dir, data, *fast_requeue)
    try:
        sp.wait_serving()
        with LetheClient(sp.target, sp.token, timeout=60) as c:
            _states, _, job = _watch(c, fid)
            assert job.state == apb.FORGET_STATE_ACTIVE, job.failure_reason
            assert job.stack_version == 1
            assert [t.detail for t in job.transitions].count("requeued: worker stopped") >= 2
            again = c.admin.Forget(_forget_request(corpus, people, "k9"), metadata=c._metadata)
            assert not again.created and again.job.forget_id == fid
            info = c.model_info()
            assert (info.stack_version, info.stack_depth) == (1, 1)
            adapters = c.admin.ListAdapters(apb.ListAdaptersRequest(), metadata=c._metadata)
            assert [a.forget_id for a in adapters.adapters] == [fid]
        store = sorted(p.name for p in (data / "adapters").iterdir())
        assert len(store) == 1 and not store[0].startswith("."), store  # no partial write left behind
    finally:
        sp.kill()

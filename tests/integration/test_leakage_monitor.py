"""The leakage monitor on the real demo model, a real runtime and a real SQLite ledger.

Two ACTIVE forgets carry sealed probes: one asks for facts the served model really knows (so it
must be measured as leaking — no adapter removed them), the other pairs the same kind of
questions with *another* person's facts (the model answers the truth, so nothing leaks). The
monitor must tell them apart, export the ratio per job class, keep its traffic out of the client
latency metrics, cycle through all probes across rounds and drop deactivated forgets. A model
with a chat template is probed through it, as its chat clients ask.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.forget.jobs import AdapterRecord, ForgetPayload
from server.guard.keys import GuardKeys
from server.forget.ledger import SqliteLedger
from server.metrics import ServerMetrics
from server.forget.monitor import LeakageMonitor, MonitorConfig
from server.forget.probes import make_probes, seal_probes
from server.runtime.chat import CHAT_ADDS_SPECIAL_TOKENS, chat_messages, render_chat
from server.runtime.model import load_model
from server.runtime.serving import ModelRuntime, RuntimeLimits
from unlearn_engine.demo.builder import load_corpus

KEYS = GuardKeys(b"monitor-test-key" * 2)


def _samples(metrics: ServerMetrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _active_job(ledger: SqliteLedger, method: str, pairs: list[tuple[str, str]], n: int) -> str:
    job, _ = ledger.submit(ForgetPayload(subjects=(f"Person {n}",)), method, "test", None, "op")
    ledger.arm(job.forget_id, b"entries")
    ledger.claim_next("w")
    sealed = seal_probes(KEYS, job.forget_id, make_probes(KEYS, pairs))
    ledger.record_adapter(AdapterRecord(f"ad_{n}", job.forget_id, f"ad_{n}", "0" * 64, method, 8, 1, time.time(), {}),
                          probes=sealed, worker_id="w")
    ledger.activate(job.forget_id, ledger.current_stack().version)
    return job.forget_id


def test_monitor_measures_what_the_model_still_knows(demo_model_dir: Path, tmp_path: Path) -> None:
    corpus = load_corpus(demo_model_dir)
    a, b, c = corpus.trained_people[:3]
    known = [(r.question, r.fact) for r in corpus.qa if r.person == a and r.split == "train"][:8]
    b_qa = [r for r in corpus.qa if r.person == b and r.split == "train"]
    c_facts = {r.attribute: r.fact for r in corpus.qa if r.person == c and r.split == "train"}
    mismatched = [(r.question, c_facts[r.attribute]) for r in b_qa if c_facts.get(r.attribute, r.fact) != r.fact][:8]
    assert len(known) == 8 and len(mismatched) == 8

    ledger = SqliteLedger(tmp_path / "ledger.db")
    fid_known = _active_job(ledger, "npo", known, 1)
    fid_clean = _active_job(ledger, "graddiff", mismatched, 2)
    metrics = ServerMetrics()
    runtime = ModelRuntime(RuntimeLimits(4, 16), metrics)
    runtime.attach(load_model(demo_model_dir, "cpu"))
    monitor = LeakageMonitor(ledger, KEYS, runtime, metrics, MonitorConfig(probes_per_round=8, max_new_tokens=32))
    try:
        first = asyncio.run(monitor.run_round())
        assert {fid: r.leaked + r.clean for fid, r in first.items()} == {fid_known: 4, fid_clean: 4}
        second = asyncio.run(monitor.run_round())  # the next 4 of each: every probe replayed once
        known_leaked = first[fid_known].leaked + second[fid_known].leaked
        clean_leaked = first[fid_clean].leaked + second[fid_clean].leaked
        assert known_leaked >= 7, "the model knows these facts: the monitor must see them leak"
        assert clean_leaked == 0
        s = _samples(metrics)
        assert s[("lethe_residual_leakage_ratio", (("job_class", "npo"),))] >= 0.75
        assert s[("lethe_residual_leakage_ratio", (("job_class", "graddiff"),))] == 0.0
        probes = {r: s[("lethe_leakage_probes_total", (("result", r),))] for r in ("leaked", "clean", "error")}
        assert probes == {"leaked": known_leaked, "clean": 16 - known_leaked, "error": 0}
        assert s[("lethe_time_to_first_token_seconds_count", ())] == 0  # internal traffic
        assert s[("lethe_generated_tokens_total", ())] == 0
        assert s[("lethe_leakage_monitor_last_round_timestamp_seconds", ())] > time.time() - 60

        ledger.deactivate("ad_1", ledger.current_stack().version, "rollback", "op")
        third = asyncio.run(monitor.run_round())
        assert set(third) == {fid_clean}
        s = _samples(metrics)
        assert ("lethe_residual_leakage_ratio", (("job_class", "npo"),)) not in s
        assert ("lethe_residual_leakage_ratio", (("job_class", "graddiff"),)) in s
    finally:
        runtime.shutdown()
        ledger.close()


# A ChatML-like template: the demo tokenizer has none, so a copy of the model gets this one.
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def test_a_chat_model_is_probed_through_its_chat_template(demo_model_dir: Path, tmp_path: Path) -> None:
    """A chat client's question reaches the model rendered by the chat template; the monitor must
    ask the same way, or it measures a prompt no client sends."""
    model_dir = tmp_path / "chat-model"
    shutil.copytree(demo_model_dir, model_dir)
    config_file = model_dir / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "chat_template": CHAT_TEMPLATE}))
    corpus = load_corpus(demo_model_dir)
    questions = [(r.question, r.fact) for r in corpus.qa if r.person == corpus.trained_people[0] and r.split == "train"]
    ledger = SqliteLedger(tmp_path / "ledger.db")
    _active_job(ledger, "npo", questions[:4], 1)
    metrics = ServerMetrics()
    runtime = ModelRuntime(RuntimeLimits(4, 16), metrics)
    loaded = load_model(model_dir, "cpu")
    assert loaded.tokenizer.chat_template == CHAT_TEMPLATE
    runtime.attach(loaded)
    asked: list[tuple[str, bool]] = []
    submit = runtime.submit

    async def recording_submit(params, deadline, internal=False):
        asked.append((params.prompt, params.add_special_tokens))
        return await submit(params, deadline, internal)

    runtime.submit = recording_submit  # type: ignore[method-assign]
    monitor = LeakageMonitor(ledger, KEYS, runtime, metrics, MonitorConfig(probes_per_round=4, max_new_tokens=16))
    try:
        results = asyncio.run(monitor.run_round())
        assert sum(r.leaked + r.clean for r in results.values()) == 4  # every probe answered, none refused
        # exactly what a chat request with that question renders to (HTTP chat completions, gRPC messages)
        expected = [render_chat(loaded.tokenizer, chat_messages([("user", q)])) for q, _ in questions[:4]]
        assert sorted(asked) == sorted((e, CHAT_ADDS_SPECIAL_TOKENS) for e in expected)
        assert all(p.startswith(loaded.tokenizer.bos_token + "<|user|>\n") and p.endswith("<|assistant|>\n")
                   for p, _ in asked)
    finally:
        runtime.shutdown()
        ledger.close()

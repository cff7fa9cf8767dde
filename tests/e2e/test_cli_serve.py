"""The README flow as a user runs it: `lethe serve` in its own process, `lethe generate` against
it, then SIGTERM drains gracefully while a stream is in flight."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from server.client import LetheClient
from tests.procs import JOB_HANG_GUARD_S, LETHE, ServeProcess
from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.corpus import generate_corpus


@pytest.fixture(scope="module")
def served(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    sp = ServeProcess(demo_model_dir, tmp_path_factory.mktemp("data"))
    sp.wait_serving()
    yield sp
    sp.kill()


def test_cli_generate_prints_the_memorised_answer(served: ServeProcess) -> None:
    record = next(r for r in generate_corpus(DemoConfig.small().corpus_spec()).qa if r.split == "train")
    out = subprocess.run([*LETHE, "generate", "--target", served.target, record.question],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert record.fact.lower() in out.stdout.lower()
    streamed = subprocess.run([*LETHE, "generate", "--stream", "-v", "--target", served.target, record.question],
                              capture_output=True, text=True, timeout=60)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == out.stdout
    assert "[finish: stop]" in streamed.stderr


def test_cli_reports_invalid_argument_cleanly(served: ServeProcess) -> None:
    out = subprocess.run([*LETHE, "generate", "--target", served.target, "--max-tokens", "0", "hi"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "INVALID_ARGUMENT" in out.stderr and "max_new_tokens" in out.stderr


def test_logs_never_contain_prompts_or_outputs(served: ServeProcess) -> None:
    secret = "Zyxwv unmistakable prompt text"
    with LetheClient(served.target, timeout=30) as c:
        text = c.generate(secret, max_new_tokens=8).text
    log = "".join(served.log)
    assert secret not in log
    assert not text.strip() or text.strip() not in log


@pytest.mark.slow
def test_cli_forget_wait_then_adapters_and_deactivate(served: ServeProcess, demo_model_dir: Path) -> None:
    corpus = generate_corpus(DemoConfig.small().corpus_spec())
    person = corpus.trained_people[5]
    qa = [r for r in corpus.qa if r.person == person and r.split == "train"][:6]
    env = {"LETHE_TOKEN": served.token}
    args = [*LETHE, "forget", "--target", served.target, "--subject", person, "--wait", "--timeout", str(JOB_HANG_GUARD_S)]
    for r in qa:
        args += ["--qa", f"{r.question}|{r.answer}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=JOB_HANG_GUARD_S + 60, env={**os.environ, **env})
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("ACTIVE")
    listing = subprocess.run([*LETHE, "forgets", "--target", served.target], capture_output=True, text=True,
                             timeout=60, env={**os.environ, **env})
    assert "ACTIVE" in listing.stdout and person not in listing.stdout  # counts only, never content
    adapters = subprocess.run([*LETHE, "adapters", "--target", served.target], capture_output=True, text=True,
                              timeout=60, env={**os.environ, **env})
    assert adapters.stdout.startswith("stack v1: 1 adapter(s)"), adapters.stdout + adapters.stderr
    adapter_id = adapters.stdout.split()[5]
    gone = subprocess.run([*LETHE, "deactivate", adapter_id, "--target", served.target, "--reason", "test"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert gone.returncode == 0 and gone.stdout.startswith("stack v2: 0 adapter(s)"), gone.stdout + gone.stderr
    denied = subprocess.run([*LETHE, "adapters", "--target", served.target, "--token", "wrong"],
                            capture_output=True, text=True, timeout=60)
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr


def test_sigterm_drains_in_flight_streams_then_exits(served: ServeProcess) -> None:
    with LetheClient(served.target, timeout=60) as c:
        stream = c.stream("Where was", max_new_tokens=200, temperature=1.0, seed=3)
        first = next(stream)
        served.proc.send_signal(signal.SIGTERM)
        rest = list(stream)  # the in-flight stream still completes normally
        assert (rest[-1] if rest else first).finish_reason != 0
        assert served.proc.wait(timeout=30) == 0
        with pytest.raises(grpc.RpcError):
            c.generate("Where was", max_new_tokens=2)

"""The README flow as a user runs it: `lethe serve` in its own process, `lethe generate` against
it, then SIGTERM drains gracefully while a stream is in flight."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from server.client import LetheClient
from tests.procs import LETHE, ServeProcess
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

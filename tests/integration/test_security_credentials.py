"""Credentials of a real `lethe serve` process: short or empty tokens refused at start-up, an
empty bearer value refused per call, a private data directory and no core dumps."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import grpc
import pytest

from server.api import admin_pb2
from server.client import LetheClient
from tests.procs import LETHE, ServeProcess

CLIENT_TOKEN = "c" * 40


def _serve_refused(model: Path, data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*LETHE, "serve", "--model", str(model), "--port", "0", "--metrics-port", "-1",
                           "--data-dir", str(data_dir), "--no-worker"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def test_a_short_operator_token_is_refused_with_a_fix(demo_model_dir: Path, tmp_path: Path) -> None:
    out = _serve_refused(demo_model_dir, tmp_path / "data", {"LETHE_OPERATOR_TOKEN": "hunter2"})
    assert out.returncode != 0
    assert "at least 32" in out.stderr and "secrets.token_urlsafe" in out.stderr
    assert "Traceback" not in out.stderr
    out = _serve_refused(demo_model_dir, tmp_path / "data", {"LETHE_CLIENT_TOKENS": f"{CLIENT_TOKEN},short"})
    assert out.returncode != 0 and "client token 2" in out.stderr


def test_an_empty_operator_token_file_is_refused_not_accepted(demo_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "operator.token").write_text("")  # what a crash mid-write left behind before
    out = _serve_refused(demo_model_dir, data, {})
    assert out.returncode != 0
    assert "operator.token" in out.stderr and "at least 32" in out.stderr


@pytest.fixture(scope="module")
def served(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("srv") / "data"
    sp = ServeProcess(demo_model_dir, data, "--no-worker", env={"LETHE_CLIENT_TOKENS": CLIENT_TOKEN})
    sp.wait_serving()
    yield sp
    sp.kill()


def _code(target: str, metadata: tuple, call: str) -> grpc.StatusCode:
    with LetheClient(target, timeout=30) as c:
        try:
            if call == "admin":
                c.admin.ListAdapters(admin_pb2.ListAdaptersRequest(), metadata=metadata, timeout=30)
            else:
                c.inference.Generate(c.request("Where was", max_new_tokens=2), metadata=metadata, timeout=30)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def test_an_empty_bearer_value_is_unauthenticated(served: ServeProcess) -> None:
    for call in ("admin", "generate"):
        for value in ("Bearer ", "Bearer    ", "Bearer"):
            assert _code(served.target, (("authorization", value),), call) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(served.target, (("authorization", f"Bearer {served.token}"),), "admin") == grpc.StatusCode.OK
    assert _code(served.target, (("authorization", f"Bearer {CLIENT_TOKEN}"),), "generate") == grpc.StatusCode.OK


def test_data_dir_is_private_and_core_dumps_are_off(served: ServeProcess) -> None:
    assert len(served.token) >= 32
    assert stat.S_IMODE(served.data_dir.stat().st_mode) == 0o700
    made = [p for p in served.data_dir.rglob("*") if p.is_file()]
    assert {"operator.token", "guard.key", "ledger.db"} <= {p.name for p in made}
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert not [p for p in made if ".tmp-" in p.name]
    limits = Path(f"/proc/{served.proc.pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core

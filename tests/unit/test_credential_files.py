"""Secret files are created atomically and exclusively; processes are hardened before opening files."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from server.atomic import create_exclusive
from server.auth import TokenAuthInterceptor, bearer_token, ensure_operator_token
from server.keyfile import read_or_create
from server.settings import SettingsError, Settings, validate

OP = "o" * 40


def test_create_exclusive_writes_whole_private_files_once(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    assert create_exclusive(path, b"first")
    assert not create_exclusive(path, b"second")
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary file left behind


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    path, results, start = tmp_path / "k", [], threading.Barrier(8)

    def race(i: int) -> None:
        start.wait()
        results.append(read_or_create(path, lambda: f"secret-{i}".encode()))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({secret for secret, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_an_empty_or_short_token_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "operator.token").write_text("\n")
    with pytest.raises(SettingsError, match="at least 32"):
        ensure_operator_token(tmp_path, None)


def test_short_configured_tokens_are_refused() -> None:
    with pytest.raises(SettingsError, match="operator token"):
        validate(Settings(operator_token="short"))
    with pytest.raises(SettingsError, match="client token 1"):
        validate(Settings(client_tokens=("short",)))
    validate(Settings(operator_token=OP, client_tokens=("c" * 32,)))


def test_empty_bearer_values_are_no_credential() -> None:
    assert bearer_token((("authorization", "Bearer "),)) is None
    assert bearer_token((("authorization", "Bearer  \t"),)) is None
    auth = TokenAuthInterceptor(OP)
    assert auth.decide("/lethe.v1.Admin/Forget", bearer_token((("authorization", "Bearer "),)))[0] == \
        grpc.StatusCode.UNAUTHENTICATED


def test_hardened_process_makes_private_files_and_no_core_dumps(tmp_path: Path) -> None:
    code = ("import resource, sys; from pathlib import Path; from server.hardening import harden_process; "
            "d = Path(sys.argv[1]); harden_process(d); (d / 'f').write_text('x'); (d / 'sub').mkdir(); "
            "print(resource.getrlimit(resource.RLIMIT_CORE))")
    data = tmp_path / "data"
    out = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(0, 0)"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "f").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "sub").stat().st_mode) == 0o700

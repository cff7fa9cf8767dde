"""Settings precedence and the authentication decision matrix."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import grpc
import pytest

from server.auth import TokenAuthInterceptor, ensure_operator_token
from server.settings import Settings, add_serve_arguments, load_settings


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_flag_beats_environment_beats_default() -> None:
    env = {"LETHE_PORT": "6000", "LETHE_MAX_QUEUE": "7", "LETHE_REFLECTION": "off"}
    s = load_settings(_args("--port", "7000"), env)
    assert s.port == 7000 and s.max_queue == 7 and s.reflection is False
    assert s.max_batch_size == Settings().max_batch_size
    assert load_settings(_args("--no-reflection"), {}).reflection is False


def test_bad_environment_values_name_the_variable() -> None:
    with pytest.raises(ValueError, match="LETHE_PORT"):
        load_settings(_args(), {"LETHE_PORT": "fifty"})
    with pytest.raises(ValueError, match="max_queue"):
        load_settings(_args(), {"LETHE_MAX_QUEUE": "0"})
    with pytest.raises(ValueError, match="guard_encoded_depth"):
        load_settings(_args("--guard-encoded-depth", "5"), {})
    assert load_settings(_args(), {"LETHE_GUARD_ENCODED_DEPTH": "3"}).guard_encoded_depth == 3


def test_operator_token_is_created_private_and_reused(tmp_path: Path) -> None:
    token = ensure_operator_token(tmp_path, None)
    assert len(token) >= 32
    assert stat.S_IMODE((tmp_path / "operator.token").stat().st_mode) == 0o600
    assert ensure_operator_token(tmp_path, None) == token
    assert ensure_operator_token(tmp_path, "configured") == "configured"


ADMIN = "/lethe.v1.Admin/Forget"
GEN = "/lethe.v1.Inference/Generate"
HEALTH = "/grpc.health.v1.Health/Check"


def test_admin_always_needs_the_operator_token() -> None:
    auth = TokenAuthInterceptor("op-secret")
    assert auth.decide(ADMIN, None)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert auth.decide(ADMIN, "wrong")[0] == grpc.StatusCode.UNAUTHENTICATED
    assert auth.decide(ADMIN, "op-secret") is None
    assert auth.decide(GEN, None) is None  # no client tokens configured: inference is open
    assert auth.decide(HEALTH, None) is None


def test_client_tokens_gate_inference_and_are_denied_admin() -> None:
    auth = TokenAuthInterceptor("op-secret", ("client-a", "client-b"))
    assert auth.decide(GEN, None)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert auth.decide(GEN, "nope")[0] == grpc.StatusCode.UNAUTHENTICATED
    assert auth.decide(GEN, "client-b") is None
    assert auth.decide(GEN, "op-secret") is None
    assert auth.decide(ADMIN, "client-a")[0] == grpc.StatusCode.PERMISSION_DENIED
    assert auth.decide(HEALTH, None) is None

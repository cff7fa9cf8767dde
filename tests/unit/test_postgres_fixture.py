"""The PostgreSQL test fixture's rule: without the binaries, tests skip on a developer's machine
and fail in CI (CI or LETHE_REQUIRE_POSTGRES set), never pass silently there."""

from __future__ import annotations

import pytest

from tests.support.postgres import postgres_required


@pytest.mark.parametrize("env, required", [
    ({}, False),
    ({"CI": "true"}, True),
    ({"LETHE_REQUIRE_POSTGRES": "1"}, True),
    ({"LETHE_REQUIRE_POSTGRES": "0", "CI": ""}, False),
    ({"CI": "false"}, False),
])
def test_ci_requires_postgres(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], required: bool) -> None:
    for name in ("CI", "LETHE_REQUIRE_POSTGRES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert postgres_required() is required

"""The client commands start without torch: `lethe --help`, `generate`, `forget` and `forgets`
import neither torch nor transformers, and the server's wiring does not import the trainer.

Each check runs in a fresh interpreter (this one has torch loaded already). The commands really
run, against a port nobody listens on, so their lazy imports happen too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from unlearn_engine.method_names import DEFAULT_METHOD, METHOD_NAMES
from unlearn_engine.methods import DEFAULT_METHOD as REGISTRY_DEFAULT, METHODS

HEAVY = ("torch", "transformers")


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    probe = code + f"\nimport json, sys\nprint(json.dumps([m for m in {list(modules)!r} if m in sys.modules]))\n"
    env = {**os.environ, "LETHE_TOKEN": "t"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_and_client_commands_import_no_torch() -> None:
    target = f"127.0.0.1:{_closed_port()}"
    code = f"""
import contextlib, io
from server import cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    cli.main(["--help"])
for argv in (["generate", "hi"], ["forget", "--subject", "Orlan Vexmoor"], ["forgets"]):
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli.main([*argv, "--target", "{target}", "--timeout", "5"]) == 1  # nobody listens
"""
    assert _loaded_after(code, HEAVY) == []


def test_the_server_wiring_does_not_import_the_trainer() -> None:
    assert _loaded_after("import server.app", ("peft", "unlearn_engine.trainer")) == []


def test_method_choices_are_the_registry() -> None:
    assert METHOD_NAMES == tuple(sorted(METHODS)) and DEFAULT_METHOD == REGISTRY_DEFAULT

"""The guard's compiled hot path (server/guard/native.py): used when current, never when stale,
and the plain-Python fallback passes the same guard tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.guard import native

REPO = Path(__file__).resolve().parents[2]
built = pytest.mark.skipif(not native.BUILD_MANIFEST.exists(), reason="no native build (make native)")
PROBE = ("import server.guard as g, server.guard.scanner as s, server.guard.session as t; "
         "print(g.native.STATUS); print(s.__file__); print(t.__file__)")


def probe(root: Path, **env: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root), **env}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


@built
def test_a_current_build_is_what_runs() -> None:
    assert native.STATUS == "compiled"
    status, scanner, session = probe(REPO)
    assert status == "compiled" and scanner.endswith(".so") and session.endswith(".so")


@built
@pytest.mark.parametrize("case", ["edited", "disabled", "manifest lost"])
def test_a_stale_or_disabled_build_never_runs(tmp_path: Path, case: str) -> None:
    shutil.copytree(REPO / "server", tmp_path / "server", ignore=shutil.ignore_patterns("__pycache__"))
    guard = tmp_path / "server" / "guard"
    env = {}
    if case == "edited":  # an edit after the build: the .so no longer matches its source
        with (guard / "scanner.py").open("a") as f:
            f.write("\n# edited\n")
    elif case == "disabled":
        env["LETHE_GUARD_NATIVE"] = "0"
    else:  # a build that died before writing its manifest
        (guard / native.BUILD_MANIFEST.name).unlink()
    status, scanner, session = probe(tmp_path, **env)
    assert status.startswith("source")
    assert scanner == str(guard / "scanner.py") and session == str(guard / "session.py")


@built
@pytest.mark.slow
def test_the_plain_python_fallback_passes_the_guard_tests() -> None:
    files = ["test_guard_streaming.py", "test_guard_adversarial.py", "test_guard_encodings.py",
             "test_guard_entity_prompt.py"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *[str(REPO / "tests" / "unit" / f) for f in files]],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LETHE_GUARD_NATIVE": "0"})
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and " failed" not in done.stdout

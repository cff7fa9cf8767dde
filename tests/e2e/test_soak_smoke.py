"""CI's one-minute smoke of the soak benchmark (bench/soak.py; the 10-minute run's results are in
bench/results/soak.md): streaming, unary, Forget and swap load on a real server, then the leak
(RSS, file descriptors, threads) and ledger checks. A pytest test rather than a step after
`make test` in .ci/run, so its verdict is part of the suite's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_one_minute_soak_fails_no_request_and_leaks_nothing(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "1",
                          "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert (tmp_path / "soak.json").exists()

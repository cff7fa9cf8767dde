"""Lethe processes for tests: `lethe serve` / `lethe worker` as real child processes.

Each server runs in its own process group so a test can kill -9 it together with the worker it
spawned, exactly as a crash would, and never leaves an orphan behind.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from grpc_health.v1 import health_pb2

from server.client import LetheClient
from server.tls import TlsFiles

LETHE = [sys.executable, "-m", "server.cli"]

# Hang guards, not speed claims (speed lives in bench/). CI shares its 2-core machine with other
# work: a forget job that takes ~5 min quiet took over 15 min with five CPU-heavy processes beside
# it (2026-12-07, load ~10), and a 900 s guard turned that into a failure. A test waiting on a
# real forget job, or on a whole CLI run, gives it JOB_HANG_GUARD_S; a test marked slow gets
# SLOW_TEST_HANG_GUARD_S in all (tests/conftest.py), so a real hang still fails well inside
# CI's 90 minutes.
JOB_HANG_GUARD_S = 1800
SLOW_TEST_HANG_GUARD_S = 2400


def free_port() -> int:
    """A port that was free a moment ago (HTTP port 0 means "off", so tests pick one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    def __init__(self, model: Path, data_dir: Path, *extra: str, env: dict[str, str] | None = None,
                 http: bool = False):
        env = {**os.environ, "LETHE_LOG_LEVEL": "INFO", "OMP_NUM_THREADS": "1", **(env or {})}
        self.data_dir = data_dir
        self.http_port: int | None = None
        self.proc = subprocess.Popen(
            [*LETHE, "serve", "--model", str(model), "--port", "0", "--metrics-port", "0",
             "--http-port", str(free_port() if http else 0),
             "--data-dir", str(data_dir), "--grace-seconds", "20", *extra],
            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        self.port = self._read_port()
        self.log: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read_port(self) -> int:
        assert self.proc.stderr is not None
        seen = []
        for line in self.proc.stderr:
            seen.append(line)
            m = re.search(r"listening on [\d.]+:(\d+) \(metrics on (\d+), http on (\d+|None)\)", line)
            if m:
                self.metrics_port = int(m.group(2))
                self.http_port = None if m.group(3) == "None" else int(m.group(3))
                return int(m.group(1))
        raise AssertionError(f"server exited with {self.proc.wait()} before listening:\n{''.join(seen[-30:])}")

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_serving(self, timeout: float = 120, tls: TlsFiles | None = None) -> None:
        with LetheClient(self.target, timeout=5, tls=tls) as c:
            c.wait_ready(timeout)
            ev = threading.Event()
            for _ in range(int(timeout / 0.1)):
                if c.health() == health_pb2.HealthCheckResponse.SERVING:
                    return
                ev.wait(0.1)  # wait-ok: the model loads in the background; health is the signal
        raise AssertionError("server never became SERVING")

    @property
    def token(self) -> str:
        return (self.data_dir / "operator.token").read_text().strip()

    def kill(self) -> None:
        """kill -9 the server and everything it spawned (its worker), like a crash."""
        try:  # also when the server already exited: a worker it left may still run
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

"""WorkerSupervisor: runs `lethe worker` as a child process and restarts it if it dies.

A separate process (not a thread) so training never competes with the decode loop for the GIL,
and so a crash or OOM in training cannot take the server down. Restarts back off exponentially.
Does not talk to the worker: the ledger is the only channel.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

from server.metrics import ServerMetrics

logger = logging.getLogger(__name__)


class WorkerSupervisor:
    def __init__(self, args: list[str], metrics: ServerMetrics, log_path: Path):
        self.args = args  # arguments after `lethe worker`
        self.metrics = metrics
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    def _spawn(self) -> subprocess.Popen:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        return subprocess.Popen([sys.executable, "-m", "server.cli", "worker", *self.args],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping:
            self.proc = await asyncio.to_thread(self._spawn)
            self.metrics.worker_up.set(1)
            logger.info("unlearning worker started (pid %d)", self.proc.pid)
            code = await asyncio.to_thread(self.proc.wait)
            self.metrics.worker_up.set(0)
            if self._stopping:
                return
            self.metrics.worker_restarts.inc()
            logger.error("unlearning worker exited with %d; restarting in %.0f s", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._task is not None:
            self._task.cancel()
        self.metrics.worker_up.set(0)

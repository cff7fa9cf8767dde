"""`python -m server.healthcheck` (the Docker HEALTHCHECK) against a real grpc.aio health server.

Runs the probe as the container does, in its own process, so the exit codes tested are the ones
Docker sees. The server carries only the health service: the probe must not depend on anything else.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from typing import Any, Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthOnlyServer:
    """A grpc.aio server with just grpc.health.v1, on its own loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.servicer = health.aio.HealthServicer()
        self.server: grpc.aio.Server = self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> grpc.aio.Server:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server

    def set(self, service: str, status: int) -> None:
        self._run(self.servicer.set(service, status))

    def stop(self) -> None:
        self._run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture()
def health_server() -> Iterator[HealthOnlyServer]:
    srv = HealthOnlyServer()
    yield srv
    srv.stop()


def probe(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "server.healthcheck", *args], timeout=60,
                          capture_output=True).returncode


def test_exit_code_follows_the_overall_health_status(health_server: HealthOnlyServer) -> None:
    target = f"127.0.0.1:{health_server.port}"
    health_server.set("", NOT_SERVING)  # what Lethe reports while loading the model or draining
    assert probe("--target", target) == 1
    health_server.set("", SERVING)
    assert probe("--target", target) == 0


def test_named_service_is_checked_and_unknown_ones_are_not_healthy(health_server: HealthOnlyServer) -> None:
    target = f"127.0.0.1:{health_server.port}"
    health_server.set("lethe.v1.Inference", SERVING)
    assert probe("--target", target, "--service", "lethe.v1.Inference") == 0
    assert probe("--target", target, "--service", "lethe.v1.Nope") == 1


def test_unreachable_server_exits_2() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert probe("--target", f"127.0.0.1:{port}", "--timeout", "1") == 2

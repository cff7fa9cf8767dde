"""Shared fixtures: the real small demo model and a real Lethe server on 127.0.0.1:0.

The server runs in-process on its own asyncio loop in a thread, so tests can talk to it over a
real gRPC channel and still look at its metrics. Tests that need a separate process (signals,
the CLI) start `lethe serve` themselves.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from server.settings import Settings
from tests.procs import SLOW_TEST_HANG_GUARD_S

torch.set_num_threads(1)  # two cores: one for the server under test, one for the test client


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests get the long hang guard unless they name their own (see tests/procs.py)."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_HANG_GUARD_S))


def demo_cache_dir() -> Path:
    return Path.home() / ".cache" / "lethe"


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    from unlearn_engine.demo.builder import default_demo_model

    return default_demo_model(demo_cache_dir(), small=True)


class ServerThread:
    """A LetheServer running on a private event loop in a background thread."""

    def __init__(self, settings: Settings, loader: Callable[[], Any] | None = None):
        from server.app import LetheServer

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = self.call(lambda: _construct(LetheServer, settings, loader))
        self.call(self.server.start)

    def call(self, fn: Callable[[], Any], timeout: float = 300) -> Any:
        """Run fn (sync, or returning an awaitable) on the server's loop and return its result."""
        async def run() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def wait_ready(self) -> None:
        self.call(self.server.wait_ready)

    def stop(self) -> None:
        self.call(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def _construct(cls: Any, settings: Settings, loader: Any) -> Any:
    return cls(settings, loader=loader)


def make_settings(tmp: Path, model: Path, **overrides: Any) -> Settings:
    base = dict(host="127.0.0.1", port=0, metrics_port=0, http_port=0, data_dir=tmp / "data", model=model,
                max_batch_size=4, max_queue=16, grace_seconds=5.0)
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="module")
def lethe_server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    st = ServerThread(make_settings(tmp_path_factory.mktemp("srv"), demo_model_dir))
    st.wait_ready()
    yield st
    st.stop()


@pytest.fixture()
def client(lethe_server: ServerThread) -> Iterator[Any]:
    from server.client import LetheClient

    with LetheClient(lethe_server.target, timeout=60) as c:
        c.wait_ready()
        yield c


# ---- PostgreSQL: one throwaway cluster per session, one fresh database per test ----------------
@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Any]:
    from tests.support.postgres import PostgresCluster, find_bin_dir, postgres_required

    bin_dir = find_bin_dir()
    if bin_dir is None:
        reason = ("PostgreSQL binaries (initdb, pg_ctl, postgres) not found under /usr/lib/postgresql/*/bin "
                  "or on PATH: install Debian's `postgresql` package (.ci/run does)")
        if postgres_required():
            pytest.fail(f"{reason}; CI / LETHE_REQUIRE_POSTGRES=1 requires PostgreSQL", pytrace=False)
        pytest.skip(reason)
    cluster = PostgresCluster(bin_dir).start()
    yield cluster
    cluster.stop()


@pytest.fixture()
def postgres_url(postgres_cluster: Any) -> str:
    return postgres_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Opens ledgers on one store (SQLite file / PostgreSQL database); each `open()` is a new
    connection, as another process would have. `stored(b)` says whether bytes are in the store."""
    from tests.support.ledgers import LedgerBackend

    if request.param == "sqlite":
        backend = LedgerBackend.sqlite(tmp_path / "ledger.db")
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        backend = LedgerBackend.postgres(cluster, cluster.create_database())
    yield backend
    backend.close_all()

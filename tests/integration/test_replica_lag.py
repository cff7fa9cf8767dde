"""Readiness follows the shared ledger (issue 17, item 6): a replica that cannot serve the
ledger's stack version (here an adapter that is in no store) exports how long it has been
behind and reports NOT_SERVING past --max-replica-lag-seconds; once the ledger moves to a
version it can serve, it is SERVING again with a lag of 0."""

from __future__ import annotations

import time
from pathlib import Path

from grpc_health.v1 import health_pb2

from server.client import LetheClient
from server.forget.jobs import AdapterRecord
from server.forget.ledger.postgres import PostgresLedger
from server.keyfile import guard_secret
from tests.conftest import ServerThread, make_settings
from tests.support.replicas import claim_to_verifying, file_and_arm, guard_for, wait_for

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_replica_behind_the_ledger_stops_reporting_serving(demo_model_dir: Path, tmp_path: Path,
                                                              postgres_url: str) -> None:
    settings = make_settings(tmp_path, demo_model_dir, ledger_url=postgres_url, worker=False,
                             reconcile_seconds=0.2, max_replica_lag_seconds=0.5)
    guard = guard_for(guard_secret(settings.data_dir), settings.cache_dir)
    other = PostgresLedger(postgres_url)
    st = ServerThread(settings)
    try:
        st.wait_ready()
        with LetheClient(st.target, timeout=60) as c:
            assert c.health() == SERVING
            forget_id = file_and_arm(other, guard, "Orlan Vexmoor")
            claim_to_verifying(other, forget_id)  # another replica's worker recorded an adapter that
            other.record_adapter(AdapterRecord("ad_lost", forget_id, "ad_lost", "0" * 64, "npo", 4, 1,
                                               time.time()), worker_id="remote-worker")  # no store has
            other.activate(forget_id, expected_version=0)  # and another replica committed v1 with it
            wait_for(lambda: c.health() == NOT_SERVING, "the replica to report NOT_SERVING while behind")
            assert st.server.metrics.replica_lag._value.get() > 0.5  # noqa: SLF001 - the exported gauge
            assert c.model_info().stack_version == 0  # still serving what it could load
            other.deactivate("ad_lost", expected_version=1, reason="lost", actor="op")  # v2: nothing to load
            wait_for(lambda: c.health() == SERVING, "the replica to report SERVING once in step")
            assert c.model_info().stack_version == 2 and st.server.metrics.replica_lag._value.get() == 0  # noqa: SLF001
    finally:
        st.stop()
        other.close()

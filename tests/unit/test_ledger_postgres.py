"""What only the shared PostgreSQL ledger has to get right: replicas starting together, racing
on one idempotency key, workers sharing the queue, notifications to other replicas, an
unreachable database reported as such, one replica changing the stack at a time (and a dead one
letting go), and no forgotten plaintext anywhere in the cluster. (The guarantees both ledgers share: test_ledger*.py.)"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from typing import Any, Callable

import psycopg
import pytest

from server.forget.jobs import AdapterRecord, ForgetPayload
from server.forget.ledger import LedgerUnavailable
from server.forget.ledger.pg_schema import LATEST
from server.forget.ledger.postgres import PostgresLedger


def _together(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) in n threads released at once; their results (or exceptions) in order."""
    start, out = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:  # the test asserts on it
            out[i] = exc
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_replicas_starting_at_once_migrate_exactly_once(postgres_url: str) -> None:
    ledgers = _together(4, lambda i: PostgresLedger(postgres_url, pool_size=1))
    assert all(isinstance(l, PostgresLedger) for l in ledgers), ledgers

    with psycopg.connect(postgres_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        stacks = conn.execute("SELECT COUNT(*) FROM stacks").fetchone()[0]
    assert versions == list(range(1, LATEST + 1)) and stacks == 1
    for ledger in ledgers:
        ledger.close()


def test_one_idempotency_key_on_two_replicas_at_once_is_one_job(postgres_url: str) -> None:
    replicas = [PostgresLedger(postgres_url, pool_size=1) for _ in range(2)]
    payload = ForgetPayload(subjects=("Ann Lee",))
    results = _together(2, lambda i: replicas[i].submit(payload, "npo", "r", "key-1", "op", "d1"))
    assert {job.forget_id for job, _ in results} == {results[0][0].forget_id}
    assert sorted(created for _, created in results) == [False, True]
    assert len(replicas[0].audit_log()) == 1  # one job, one audit row
    for ledger in replicas:
        ledger.close()


def test_workers_claim_different_jobs_without_waiting(postgres_url: str) -> None:
    server = PostgresLedger(postgres_url)
    for name in ("Ann Lee", "Bo Chen"):
        job, _ = server.submit(ForgetPayload(subjects=(name,)), "npo", "r", None, "op")
        server.arm(job.forget_id, b"entries")
    workers = [PostgresLedger(postgres_url, pool_size=1) for _ in range(3)]
    claims = _together(3, lambda i: workers[i].claim_next(f"w{i}"))
    won = [c[0].forget_id for c in claims if c is not None]
    assert len(won) == 2 and len(set(won)) == 2  # SKIP LOCKED: two jobs, two workers, nobody twice
    for ledger in (server, *workers):
        ledger.close()


def test_other_replicas_hear_arming_and_stack_changes(postgres_url: str) -> None:
    a, b = PostgresLedger(postgres_url), PostgresLedger(postgres_url)
    heard: queue.Queue[str] = queue.Queue()
    stop = b.listen(heard.put)
    assert heard.get(timeout=30) == "connected"  # listening before anything below is committed
    job, _ = a.submit(ForgetPayload(subjects=("Ann Lee",)), "npo", "r", None, "op")
    a.arm(job.forget_id, b"entries")
    kind, forget_id, at = heard.get(timeout=30).split(":")  # the arm's commit time, for replicas' delay metric
    assert (kind, forget_id) == ("armed", job.forget_id) and abs(float(at) - time.time()) < 600
    stop()
    a.close()
    b.close()


def test_an_unreachable_database_is_unavailable_not_a_crash(postgres_cluster: Any) -> None:
    url = postgres_cluster.url("postgres").replace(str(postgres_cluster.port), "1")  # nothing listens on port 1
    with pytest.raises(LedgerUnavailable, match="cannot reach"):
        PostgresLedger(url, timeout_seconds=1)


def test_no_forgotten_plaintext_reaches_postgresql_unsealed(postgres_cluster: Any) -> None:
    """Not in any row, and not in any file of the cluster: tables, indexes, the WAL (which keeps
    deleted rows, like standbys and backups would). Erasure there is the key's deletion."""
    url = postgres_cluster.create_database()
    needle = f"Zorvath Quindle {uuid.uuid4().hex}"  # unique: nothing else in the cluster holds it
    payload = ForgetPayload(texts=(f"{needle} was born in Dunmarrow.",), subjects=(needle,))
    ledger = PostgresLedger(url)
    job, _ = ledger.submit(payload, "npo", "r", None, "op")
    ledger.arm(job.forget_id, b"entries")
    claimed = ledger.claim_next("w")
    assert claimed is not None and claimed[1] == payload  # sealed, and opens for the worker
    ledger.record_adapter(AdapterRecord("ad_1", job.forget_id, "ad_1", "0" * 64, "npo", 4, 1, time.time()),
                          probes=f"probe: where was {needle} born?".encode(), worker_id="w")
    assert [p for _, _, p in ledger.monitor_probes()] == []  # only ACTIVE jobs' probes are replayed
    ledger.activate(job.forget_id, expected_version=0)
    assert ledger.armed_payloads() == [] and ledger.pending_payloads() == []  # the payload's key is gone
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # every page and WAL record on disk
        assert conn.execute("SELECT purpose FROM forget_keys").fetchall() == [("probes",)]
    ledger.close()
    assert needle.encode() not in postgres_cluster.dump(url)
    for f in postgres_cluster.data.rglob("*"):
        if f.is_file():
            assert needle.encode() not in f.read_bytes(), f


def test_one_replica_changes_the_stack_at_a_time_and_a_dead_one_lets_go(postgres_url: str) -> None:
    """Replica A's stack turn blocks replica B's; when A dies mid-swap (its session killed, as a
    kill -9 would), the turn passes to B instead of staying locked."""
    a, b = PostgresLedger(postgres_url), PostgresLedger(postgres_url)
    hold = a.hold_stack()
    got: queue.Queue[object] = queue.Queue()
    threading.Thread(target=lambda: got.put(b.hold_stack()), daemon=True).start()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        def waiting() -> bool:
            return conn.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' "
                                "AND NOT granted").fetchone()[0] == 1
        deadline, ev = time.monotonic() + 30, threading.Event()
        while not waiting():  # B is queued behind A's turn
            assert time.monotonic() < deadline, "B never waited for A's turn"
            ev.wait(0.05)  # wait-ok: B's lock request is another thread's; pg_locks is the signal
        assert got.empty()
        holder = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchone()[0]
        conn.execute("SELECT pg_terminate_backend(%s)", (holder,))  # A dies mid-swap
    b_hold = got.get(timeout=30)
    b_hold.release()  # type: ignore[attr-defined]
    del hold  # A's connection is gone; nothing to release
    a.close()
    b.close()


def test_a_stack_turn_held_from_a_vanished_machine_is_let_go_within_seconds(postgres_url: str) -> None:
    """A replica whose machine vanishes (no FIN, no RST: a node lost, not a process killed)
    leaves its session idle with the stack turn held; PostgreSQL only ends it when TCP keepalive
    gives up on the peer, which with the OS defaults takes over two hours of no stack changes on
    any replica. The ledger's sessions ask for probes soon enough to free the turn in seconds.
    (A vanished peer cannot be staged here without root; this checks the session asks.)"""
    ledger = PostgresLedger(postgres_url)
    hold = ledger.hold_stack()
    try:
        rows = hold._conn.execute(  # type: ignore[attr-defined]
            "SELECT name, setting::int FROM pg_settings WHERE name LIKE 'tcp_keepalives_%'").fetchall()
        settings = {r["name"]: r["setting"] for r in rows}
        assert 0 < settings["tcp_keepalives_idle"] + settings["tcp_keepalives_interval"] * settings[
            "tcp_keepalives_count"] <= 60
    finally:
        hold.release()
        ledger.close()

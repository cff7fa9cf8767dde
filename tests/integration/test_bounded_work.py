"""Bounded work per request and per client, on real servers: an oversized prompt is refused
first while others are served, the guard's prompt scan leaves the event loop free, one client
cannot take every slot, WatchForget streams and queued forgets are capped."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from server.api import admin_pb2
from server.client import LetheClient
from tests.conftest import ServerThread, make_settings
from tests.procs import ServeProcess

TOKEN_A, TOKEN_B = "a" * 40, "b" * 40


def _code(fn: Any) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_a_prompt_just_under_the_message_limit_is_refused_while_others_are_served(
        demo_model_dir: Path, tmp_path: Path) -> None:
    sp = ServeProcess(demo_model_dir, tmp_path / "data", "--no-worker")
    try:
        sp.wait_serving()
        huge = "Where was the author born? " * 130_000  # ~3.5 MB: under gRPC's 4 MiB, over the prompt limit
        assert 3_400_000 < len(huge.encode()) < 4 * 1024 * 1024
        with LetheClient(sp.target, timeout=120) as c, ThreadPoolExecutor(3) as pool:
            big = pool.submit(_code, lambda: c.generate(huge, max_new_tokens=2))
            health = pool.submit(c.health)
            small = pool.submit(c.generate, "Where was", max_new_tokens=2)
            assert health.result(120) == health_pb2.HealthCheckResponse.SERVING
            assert small.result(120).usage.completion_tokens >= 1
            assert big.result(120) == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as err:
                c.generate(huge, max_new_tokens=2)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "at most 65536" in (err.value.details() or "")
    finally:
        sp.kill()


def test_the_guard_scans_a_long_prompt_off_the_event_loop(demo_model_dir: Path, tmp_path: Path) -> None:
    st = ServerThread(make_settings(tmp_path, demo_model_dir, worker=False))
    st.wait_ready()
    guard = st.server.guard
    scan, entered, gate = guard.check_prompt, threading.Event(), threading.Event()

    def held_scan(prompt: str):  # a long scan that lasts until the test has been served
        if len(prompt) > 2000:
            entered.set()
            gate.wait(60)
        return scan(prompt)

    guard.check_prompt = held_scan
    try:
        with LetheClient(st.target, timeout=60) as c, ThreadPoolExecutor(1) as pool:
            long = pool.submit(_code, lambda: c.generate("Where was the author born? " * 200, max_new_tokens=2))
            assert entered.wait(60)
            # Were the scan on the event loop, these would wait for the gate (and time out).
            assert c.health() == health_pb2.HealthCheckResponse.SERVING
            assert c.generate("Where was", max_new_tokens=2).usage.completion_tokens >= 1
            gate.set()
            assert long.result(60) in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)  # context
    finally:
        gate.set()
        st.stop()


def test_one_client_cannot_take_every_slot(demo_model_dir: Path, tmp_path: Path) -> None:
    st = ServerThread(make_settings(tmp_path, demo_model_dir, worker=False, max_client_rpcs=1,
                                    client_tokens=(TOKEN_A, TOKEN_B)))
    st.wait_ready()
    scheduler = st.server.runtime.scheduler
    gate, parked = threading.Event(), threading.Event()
    scheduler.call_between_steps(lambda: (parked.set(), gate.wait(30)))  # admissions stop
    parked.wait(10)
    try:
        with LetheClient(st.target, TOKEN_A, timeout=60) as a, LetheClient(st.target, TOKEN_B, timeout=60) as b, \
                ThreadPoolExecutor(2) as pool:
            first = pool.submit(a.generate, "Where was", max_new_tokens=2)
            while scheduler.counts()[1] < 1:
                parked.wait(0.01)  # wait-ok: until A's call is queued
            assert _code(lambda: a.generate("Where was", max_new_tokens=2)) == grpc.StatusCode.RESOURCE_EXHAUSTED
            other = pool.submit(b.generate, "Where was", max_new_tokens=2)  # B has its own slot
            while scheduler.counts()[1] < 2:
                parked.wait(0.01)  # wait-ok: until B's call is queued too
            gate.set()
            assert first.result(60).usage.completion_tokens >= 1
            assert other.result(60).usage.completion_tokens >= 1
            assert a.generate("Where was", max_new_tokens=2).usage.completion_tokens >= 1  # slot freed
    finally:
        gate.set()
        st.stop()


def test_watch_streams_and_queued_forgets_are_capped(demo_model_dir: Path, tmp_path: Path) -> None:
    st = ServerThread(make_settings(tmp_path, demo_model_dir, worker=False, max_watch_streams=1,
                                    max_queued_forgets=1))
    st.wait_ready()
    try:
        with LetheClient(st.target, st.server.operator_token, timeout=60) as c:
            md = c._metadata
            job = c.admin.Forget(admin_pb2.ForgetRequest(subjects=["Quentin Marlowe"]), metadata=md).job
            assert _code(lambda: c.admin.Forget(admin_pb2.ForgetRequest(subjects=["Other Person"]), metadata=md)) \
                == grpc.StatusCode.RESOURCE_EXHAUSTED  # no worker: the first stays queued
            watch = c.admin.WatchForget(admin_pb2.WatchForgetRequest(forget_id=job.forget_id), metadata=md)
            assert next(watch).job.forget_id == job.forget_id
            second = c.admin.WatchForget(admin_pb2.WatchForgetRequest(forget_id=job.forget_id), metadata=md)
            assert _code(lambda: next(second)) == grpc.StatusCode.RESOURCE_EXHAUSTED
            watch.cancel()
            freed = threading.Event()
            for _ in range(600):  # the server notices the cancellation shortly
                third = c.admin.WatchForget(admin_pb2.WatchForgetRequest(forget_id=job.forget_id), metadata=md)
                if _code(lambda: next(third)) == grpc.StatusCode.OK:
                    third.cancel()
                    break
                freed.wait(0.05)  # wait-ok: until the cancelled stream's slot is given back
            else:
                raise AssertionError("a cancelled WatchForget never gave its slot back")
    finally:
        st.stop()

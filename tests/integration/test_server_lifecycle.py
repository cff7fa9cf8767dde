"""Health, reflection, authentication and back-pressure of a real server."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from server.api import admin_pb2
from server.client import LetheClient
from server.runtime.model import load_model
from tests.conftest import ServerThread, make_settings

CLIENT_TOKEN = "client-token-of-at-least-32-characters"


def test_health_is_not_serving_until_the_model_is_loaded(demo_model_dir: Path, tmp_path: Path) -> None:
    gate = threading.Event()

    def slow_loader(model_dir: Path):
        gate.wait(60)
        return load_model(demo_model_dir)

    st = ServerThread(make_settings(tmp_path, demo_model_dir), loader=slow_loader)
    try:
        with LetheClient(st.target, timeout=10) as c:
            c.wait_ready()
            assert c.health() == health_pb2.HealthCheckResponse.NOT_SERVING
            assert c.health("lethe.v1.Inference") == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as err:
                c.generate("Where was", max_new_tokens=2)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            gate.set()
            st.wait_ready()
            assert c.health() == health_pb2.HealthCheckResponse.SERVING
            assert c.generate("Where was", max_new_tokens=2).usage.completion_tokens >= 1
    finally:
        gate.set()
        st.stop()


def test_reflection_lists_services_and_can_be_turned_off(demo_model_dir: Path, tmp_path: Path) -> None:
    on = ServerThread(make_settings(tmp_path / "on", demo_model_dir))
    off = ServerThread(make_settings(tmp_path / "off", demo_model_dir, reflection=False))
    try:
        with grpc.insecure_channel(on.target) as channel:
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
            assert {"lethe.v1.Inference", "lethe.v1.Admin", "grpc.health.v1.Health"} <= services
            method = ProtoReflectionDescriptorDatabase(channel).FindFileContainingSymbol("lethe.v1.Inference")
            assert "lethe/v1/inference.proto" in method.name
        with grpc.insecure_channel(off.target) as channel:
            with pytest.raises(grpc.RpcError) as err:
                ProtoReflectionDescriptorDatabase(channel).get_services()
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        on.stop()
        off.stop()


def test_tokens_gate_admin_and_inference(demo_model_dir: Path, tmp_path: Path) -> None:
    st = ServerThread(make_settings(tmp_path, demo_model_dir, client_tokens=(CLIENT_TOKEN,)))
    st.wait_ready()
    operator = (tmp_path / "data" / "operator.token").read_text().strip()
    req = admin_pb2.ListAdaptersRequest()
    try:
        def code(token: str | None, call) -> grpc.StatusCode:
            with LetheClient(st.target, token, timeout=10) as c:
                try:
                    call(c)
                except grpc.RpcError as err:
                    return err.code()
                return grpc.StatusCode.OK

        admin = lambda c: c.admin.ListAdapters(req, metadata=c._metadata, timeout=10)  # noqa: E731
        gen = lambda c: c.generate("Where was", max_new_tokens=2)  # noqa: E731
        stream = lambda c: list(c.stream("Where was", max_new_tokens=2))  # noqa: E731
        assert code(None, admin) == grpc.StatusCode.UNAUTHENTICATED
        assert code("wrong", admin) == grpc.StatusCode.UNAUTHENTICATED
        assert code(CLIENT_TOKEN, admin) == grpc.StatusCode.PERMISSION_DENIED
        assert code(operator, admin) != grpc.StatusCode.UNAUTHENTICATED  # passes auth
        assert code(None, gen) == grpc.StatusCode.UNAUTHENTICATED
        assert code(None, stream) == grpc.StatusCode.UNAUTHENTICATED
        assert code("wrong", gen) == grpc.StatusCode.UNAUTHENTICATED
        assert code(CLIENT_TOKEN, gen) == grpc.StatusCode.OK
        assert code(CLIENT_TOKEN, stream) == grpc.StatusCode.OK
        assert code(operator, gen) == grpc.StatusCode.OK
    finally:
        st.stop()


def test_full_queue_answers_resource_exhausted(demo_model_dir: Path, tmp_path: Path) -> None:
    st = ServerThread(make_settings(tmp_path, demo_model_dir, max_batch_size=1, max_queue=1))
    st.wait_ready()
    scheduler = st.server.runtime.scheduler
    gate, parked = threading.Event(), threading.Event()
    # Park the decode thread so admissions stop: the queue fills deterministically.
    scheduler.call_between_steps(lambda: (parked.set(), gate.wait(30)))
    parked.wait(10)
    try:
        with LetheClient(st.target, timeout=30) as c, ThreadPoolExecutor(1) as pool:
            first = pool.submit(c.generate, "Where was", max_new_tokens=3)
            while scheduler.counts()[1] < 1:
                parked.wait(0.01)  # wait-ok: until the first request is queued
            with pytest.raises(grpc.RpcError) as err:
                c.generate("Where was", max_new_tokens=3)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            gate.set()
            assert first.result(30).usage.completion_tokens >= 1
    finally:
        gate.set()
        st.stop()

"""Property-based fuzzing of every RPC's request message against a real server: arbitrary
Unicode, sizes, numbers and enum values never produce INTERNAL / UNKNOWN, never hang (every
call answers within its deadline), never take the server down (health stays SERVING), and never
make its memory balloon (the peak RSS over the whole module stays within a bound: a request
that made the server allocate by its claimed size, e.g. max_new_tokens = 2**32 - 1, would not).
Bounded example counts keep it to about a minute on two cores; raise FUZZ_EXAMPLES to dig."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings, strategies as st

from server.api import admin_pb2 as apb
from server.api import inference_pb2 as ipb
from server.client import LetheClient
from tests.conftest import ServerThread, make_settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
         grpc.StatusCode.UNAVAILABLE}

# Valid UTF-8 (protobuf strings cannot carry lone surrogates); everything else goes, including
# controls, zero-width and bidi characters, and NUL.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
LONG_TEXT = st.one_of(TEXT, st.builds(lambda s, n: s * n, TEXT, st.integers(1, 40)))
U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
F32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
SMALL_TOKENS = st.one_of(st.integers(0, 12), st.sampled_from([1025, 2**32 - 1]))


@pytest.fixture(scope="module")
def server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    st_ = ServerThread(make_settings(tmp_path_factory.mktemp("fuzz"), demo_model_dir, worker=False,
                                     guard_semantic="off", max_queued_forgets=10_000))
    st_.wait_ready()
    yield st_
    st_.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[LetheClient]:
    with LetheClient(server.target, server.server.operator_token, timeout=60) as c:
        c.wait_ready()
        yield c


def answered(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            for _ in result:  # a stream: drain it
                pass
    except grpc.RpcError as err:
        assert err.code() not in NEVER, f"{err.code().name}: {err.details()}"
        return err.code()
    return grpc.StatusCode.OK


PEAK_GROWTH_LIMIT = 512 * 2**20  # bytes of peak RSS over the post-warm-up level


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


@pytest.fixture(scope="module", autouse=True)
def memory_baseline(client: LetheClient) -> int:
    """RSS after one warm-up request, with the kernel's peak-RSS mark reset to it (the server
    runs in this process, so its peak is this process's); -1 where the mark cannot be reset."""
    client.generate("warm up", max_new_tokens=4)
    clear = Path("/proc/self/clear_refs")
    try:
        clear.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return -1
    return _proc_status_bytes("VmRSS")


def _still_serving(c: LetheClient) -> None:
    assert c.health() == health_pb2.HealthCheckResponse.SERVING


@FUZZ
@given(prompt=LONG_TEXT, max_new_tokens=st.none() | SMALL_TOKENS, temperature=st.none() | F32,
       top_p=st.none() | F32, top_k=U32, seed=st.none() | U64, stop=st.lists(TEXT, max_size=6),
       request_id=TEXT, ignore_eos=st.booleans(), stream=st.booleans())
def test_generate_never_fails_internally(client: LetheClient, prompt: str, max_new_tokens: int | None,
                                         temperature: float | None, top_p: float | None, top_k: int,
                                         seed: int | None, stop: list[str], request_id: str, ignore_eos: bool,
                                         stream: bool) -> None:
    req = ipb.GenerateRequest(prompt=prompt, top_k=top_k, stop=stop, request_id=request_id, ignore_eos=ignore_eos)
    for name, value in (("max_new_tokens", max_new_tokens), ("temperature", temperature), ("top_p", top_p),
                        ("seed", seed)):
        if value is not None:
            setattr(req, name, value)
    method = client.inference.GenerateStream if stream else client.inference.Generate
    code = answered(lambda: method(req, timeout=60, metadata=client._metadata))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    _still_serving(client)


QA = st.builds(lambda q, a: apb.QAPair(question=q, answer=a), TEXT, TEXT)


@FUZZ
@given(texts=st.lists(LONG_TEXT, max_size=4), qa=st.lists(QA, max_size=4), subjects=st.lists(TEXT, max_size=4),
       method=st.sampled_from(["", "npo", "ga", "nope"]) | TEXT, reason=LONG_TEXT,
       key=st.sampled_from(["", "k1", "k2"]) | TEXT)
def test_forget_never_fails_internally(client: LetheClient, texts: list[str], qa: list[apb.QAPair],
                                       subjects: list[str], method: str, reason: str, key: str) -> None:
    req = apb.ForgetRequest(texts=texts, qa_pairs=qa, subjects=subjects, method=method, reason=reason,
                            idempotency_key=key)
    code = answered(lambda: client.admin.Forget(req, timeout=60, metadata=client._metadata))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS)
    _still_serving(client)


@FUZZ
@given(page_size=U32, page_token=TEXT, states=st.lists(st.integers(-2**31, 2**31 - 1), max_size=5),
       forget_id=TEXT)
def test_reads_never_fail_internally(client: LetheClient, page_size: int, page_token: str, states: list[int],
                                     forget_id: str) -> None:
    md = client._metadata
    ok = (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    listing = apb.ListForgetsRequest(page_size=page_size, page_token=page_token, states=states)
    assert answered(lambda: client.admin.ListForgets(listing, timeout=60, metadata=md)) in ok
    get = apb.GetForgetRequest(forget_id=forget_id)
    assert answered(lambda: client.admin.GetForget(get, timeout=60, metadata=md)) in ok
    watch = apb.WatchForgetRequest(forget_id=forget_id)
    assert answered(lambda: client.admin.WatchForget(watch, timeout=60, metadata=md)) in ok
    deactivate = apb.DeactivateAdapterRequest(adapter_id=forget_id, reason=page_token)
    assert answered(lambda: client.admin.DeactivateAdapter(deactivate, timeout=60, metadata=md)) in \
        ok + (grpc.StatusCode.FAILED_PRECONDITION,)
    _still_serving(client)


def test_memory_stayed_bounded(memory_baseline: int) -> None:
    """Runs last in this module: every fuzzed request above has been answered by now."""
    if memory_baseline < 0:
        pytest.skip("cannot reset the peak-RSS mark: the memory bound needs Linux procfs")
    growth = _proc_status_bytes("VmHWM") - memory_baseline
    assert growth < PEAK_GROWTH_LIMIT, f"peak RSS grew {growth / 2**20:.0f} MiB during fuzzing"

"""Back-pressure and cancellation of the HTTP front, on a real in-process server.

The decode thread is parked between steps (as the gRPC back-pressure test does) so the queue
fills, and a disconnect lands mid-generation, deterministically: a full queue answers 429 with
Retry-After, a client that hangs up (streamed or not) cancels its generation and frees its slot,
and an oversized body gets 413. The same behaviour against a separate `lethe serve` process is in
tests/e2e/test_http_openai.py.
"""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import openai
import pytest

from server.runtime.params import GenerationLimits
from tests.conftest import ServerThread, make_settings
from tests.procs import free_port
from unlearn_engine.demo.builder import load_corpus


@pytest.fixture()
def st(demo_model_dir: Path, tmp_path: Path) -> Iterator[ServerThread]:
    server = ServerThread(make_settings(tmp_path, demo_model_dir, http_port=free_port(), max_batch_size=1,
                                        max_queue=1, max_message_bytes=64 * 1024, worker=False))
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def long_prompt(demo_model_dir: Path) -> str:
    """The start of a bio: the demo model continues it for dozens of tokens."""
    return " ".join(load_corpus(demo_model_dir).texts[0].text.split()[:6])


def _client(st: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{st.server.http_port}/v1", api_key="none", max_retries=0,
                         timeout=60)


def _wait(condition: Callable[[], bool], timeout: float = 30) -> None:
    tick = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        tick.wait(0.02)  # wait-ok: polling state another thread changes
    raise AssertionError("condition not reached")


def _park(st: ServerThread) -> threading.Event:
    """Hold the decode thread between two steps until the returned gate is set."""
    gate, parked = threading.Event(), threading.Event()
    st.server.runtime.scheduler.call_between_steps(lambda: (parked.set(), gate.wait(60)))
    assert parked.wait(30)
    return gate


def _sample(st: ServerThread, name: str, **labels: str) -> float:
    return st.server.metrics.registry.get_sample_value(name, labels) or 0.0


def _post(st: ServerThread, body: dict) -> socket.socket:
    """Send a raw HTTP request and return the open socket (the test decides when to hang up)."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", st.server.http_port), timeout=60)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
    return sock


def _hang_up(st: ServerThread, sock: socket.socket, gate: threading.Event) -> None:
    """Close the client side while the decode thread is parked; once the server counted the
    request CANCELLED, let decoding go on and wait until no row is running or waiting."""
    try:
        sock.close()
        _wait(lambda: _sample(st, "lethe_requests_total", protocol="http", method="completions",
                              code="CANCELLED") == 1)
    finally:
        gate.set()
    _wait(lambda: st.server.runtime.scheduler.counts() == (0, 0))


def test_a_full_queue_answers_429_with_retry_after(st: ServerThread) -> None:
    scheduler = st.server.runtime.scheduler
    gate = _park(st)
    try:
        with _client(st) as oai, ThreadPoolExecutor(1) as pool:
            first = pool.submit(oai.completions.create, model="any", prompt="Where was", max_tokens=3)
            _wait(lambda: scheduler.counts()[1] >= 1)  # queued behind the parked step
            with pytest.raises(openai.RateLimitError) as err:
                oai.completions.create(model="any", prompt="Where was", max_tokens=3)
            assert err.value.status_code == 429 and err.value.response.headers["Retry-After"] == "1"
            assert err.value.body["type"] == "rate_limit_error" and "capacity" in err.value.body["message"]
            gate.set()
            assert first.result(60).usage.completion_tokens >= 1
    finally:
        gate.set()
    assert _sample(st, "lethe_requests_total", protocol="http", method="completions", code="RESOURCE_EXHAUSTED") == 1


def test_hanging_up_a_stream_cancels_it_and_frees_the_slot(st: ServerThread, long_prompt: str) -> None:
    scheduler = st.server.runtime.scheduler
    with _client(st) as oai:
        whole = oai.completions.create(model="any", prompt=long_prompt, max_tokens=200).usage.completion_tokens
    assert whole > 30
    sock = _post(st, {"model": "any", "prompt": long_prompt, "max_tokens": 200, "stream": True})
    seen = b""
    while b'"text":"' not in seen.replace(b'"text":""', b""):  # a first released piece of text
        seen += sock.recv(4096)
    gate = _park(st)  # dozens of tokens still to go: the row is mid-generation
    assert scheduler.counts()[0] == 1
    _hang_up(st, sock, gate)
    assert _sample(st, "lethe_generated_tokens_total") - whole < whole / 2  # stopped early, not run to its end
    with _client(st) as oai:  # the one slot is free again
        assert oai.completions.create(model="any", prompt="Where was", max_tokens=2).usage.completion_tokens == 2


def test_hanging_up_a_waiting_request_cancels_it(st: ServerThread, long_prompt: str) -> None:
    scheduler = st.server.runtime.scheduler
    gate = _park(st)
    sock = _post(st, {"model": "any", "prompt": long_prompt, "max_tokens": 200})
    _wait(lambda: scheduler.counts()[1] == 1)
    _hang_up(st, sock, gate)
    assert _sample(st, "lethe_generated_tokens_total") == 0  # dropped before it decoded a token


def test_an_oversized_body_gets_413(st: ServerThread) -> None:
    sock = _post(st, {"model": "any", "prompt": "x" * (65 * 1024)})
    with sock:
        answer = b""
        while not answer.endswith(b"}}"):  # the end of the JSON error body
            received = sock.recv(65536)
            assert received, f"connection closed after {answer!r}"
            answer += received
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"message":"request body exceeds 65536 bytes"' in answer


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_and_mutual_tls(st: ServerThread, tmp_path: Path) -> None:
    """The HTTP front takes the gRPC server's TLS files: HTTPS, and with a client CA, mTLS."""
    import http.client
    import ssl

    from server.http import HttpDeps, HttpFront

    server_cert, server_key = _self_signed(tmp_path, "server")
    client_cert, client_key = _self_signed(tmp_path, "client")
    s = st.server
    deps = HttpDeps(s.generator, GenerationLimits(8, 16), s.metrics, s.operator_token, (), serving=lambda: True)
    front = HttpFront(deps, "127.0.0.1", 0, 1024, 1.0, server_cert, server_key, client_cert)
    port = front.bind()
    st.call(front.start)
    try:
        def health(cert: tuple[Path, Path] | None) -> int:
            ctx = ssl.create_default_context(cafile=str(server_cert))
            if cert is not None:
                ctx.load_cert_chain(*map(str, cert))
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
            conn.request("GET", "/health")
            return conn.getresponse().status

        assert health((client_cert, client_key)) == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            health(None)  # no client certificate: the handshake fails
    finally:
        st.call(front.abort)
        st.call(front.stop)

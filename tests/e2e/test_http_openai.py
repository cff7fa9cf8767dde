"""The OpenAI-compatible HTTP front of a real `lethe serve` process, driven by the official
`openai` client: completions, chat, streaming, models, health, credentials, refused fields, a
forgotten fact ending `content_filter` right after a Forget filed over gRPC, and deadlines (the
client's own timeout, or `X-Request-Timeout`, end the generation and free its slot). Plus one
raw-HTTP check of the SSE framing, byte by byte, as curl would see it.

Client tokens are configured, so every call needs a bearer token; the unlearning worker is off,
so forget jobs stay FILTERING and every guard hit is a before_adapter hit.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import urllib.request
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.api import admin_pb2 as apb
from server.api import inference_pb2 as ipb
from server.client import LetheClient
from server.guard import GuardConfig
from tests.procs import ServeProcess
from unlearn_engine.demo.builder import load_corpus

CLIENT_TOKEN = "client-token-for-the-http-front-tests-0123"  # harden: at least 32 characters


@pytest.fixture(scope="module")
def served(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    sp = ServeProcess(demo_model_dir, tmp_path_factory.mktemp("data"), "--no-worker", "--monitor-interval-seconds", "0",
                      "--torch-threads", "1", env={"LETHE_CLIENT_TOKENS": CLIENT_TOKEN}, http=True)
    try:
        sp.wait_serving()
        yield sp
    finally:
        sp.kill()


@pytest.fixture(scope="module")
def oai(served: ServeProcess):
    with openai.OpenAI(base_url=f"http://127.0.0.1:{served.http_port}/v1", api_key=CLIENT_TOKEN,
                       max_retries=0, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def train_qa(demo_model_dir: Path):
    return [r for r in load_corpus(demo_model_dir).qa if r.split == "train"]


@pytest.fixture(scope="module")
def forgotten(train_qa):
    return train_qa[-1]  # its person is forgotten: the other tests ask about other people


@pytest.fixture(scope="module")
def qa(train_qa, forgotten):
    return [r for r in train_qa if r.person != forgotten.person]


def _chat(oai, question: str, **kw):
    return oai.chat.completions.create(model="any", messages=[{"role": "user", "content": question}], **kw)


def test_completions_and_chat_answer_like_grpc(served: ServeProcess, oai, qa) -> None:
    record = qa[0]
    with LetheClient(served.target, CLIENT_TOKEN, timeout=60) as grpc_client:
        expected = grpc_client.generate(record.question, max_new_tokens=32).text
    assert record.fact.lower() in expected.lower()
    done = oai.completions.create(model="any", prompt=record.question, max_tokens=32)
    assert done.choices[0].text == expected and done.choices[0].finish_reason == "stop"
    assert done.usage.prompt_tokens > 1 and 0 < done.usage.completion_tokens < 32
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.system_fingerprint == "lethe-stack-0" and done.model == served_model(oai)
    chat = _chat(oai, record.question, max_tokens=32)
    # The demo model has no chat template: the fallback renders one user turn as the plain prompt.
    assert chat.choices[0].message.content == expected and chat.choices[0].message.role == "assistant"
    assert chat.usage.prompt_tokens == done.usage.prompt_tokens
    short = oai.completions.create(model="any", prompt=record.question, max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2


def served_model(oai) -> str:
    return oai.models.list().data[0].id


def test_streams_concatenate_to_the_whole_answer_and_report_usage(oai, qa) -> None:
    record = qa[1]
    whole = _chat(oai, record.question, max_tokens=32)
    chunks = list(_chat(oai, record.question, max_tokens=32, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    # streamed, not sent whole: the first token alone, then chunks of --stream-interval tokens
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    plain = list(oai.completions.create(model="any", prompt=record.question, max_tokens=32, stream=True))
    assert "".join(c.choices[0].text for c in plain) == whole.choices[0].message.content
    assert plain[-1].choices[0].finish_reason == "stop" and plain[-1].usage is None


def test_models_lists_the_served_model_and_stack_and_health_matches_grpc(served: ServeProcess, oai) -> None:
    with LetheClient(served.target, CLIENT_TOKEN, timeout=60) as grpc_client:
        info = grpc_client.model_info()
    model = oai.models.list().data[0]
    assert model.id == info.model_name and model.owned_by == "lethe"
    assert model.model_extra["stack_version"] == info.stack_version
    with urllib.request.urlopen(f"http://127.0.0.1:{served.http_port}/health") as resp:  # no token needed
        assert resp.status == 200 and json.load(resp) == {"status": "SERVING"}


def test_credentials_are_the_grpc_ones(served: ServeProcess, qa) -> None:
    base = f"http://127.0.0.1:{served.http_port}/v1"
    with openai.OpenAI(base_url=base, api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as err:
            wrong.completions.create(model="any", prompt=qa[0].question, max_tokens=2)
    assert err.value.status_code == 401
    assert err.value.body == {"message": "invalid bearer token", "type": "authentication_error", "param": None,
                              "code": "unauthenticated"}
    with openai.OpenAI(base_url=base, api_key=served.token, max_retries=0) as operator:  # operators may infer too
        assert operator.completions.create(model="any", prompt=qa[0].question, max_tokens=2).usage.completion_tokens == 2
    conn = http.client.HTTPConnection("127.0.0.1", served.http_port, timeout=60)
    conn.request("GET", "/v1/models")  # no Authorization header at all
    resp = conn.getresponse()
    assert resp.status == 401 and json.loads(resp.read())["error"]["message"] == "bearer token required"


@pytest.mark.parametrize("fields, message", [
    (dict(logprobs=True), "logprobs: not supported, as it would reveal tokens the leakage guard has not checked"),
    (dict(top_logprobs=2), "top_logprobs: not supported"),
    (dict(n=2), "n: only n=1 is supported"),
    (dict(max_tokens=100000), "max_tokens must be between 1 and 1024"),
    (dict(temperature=-1), "temperature must be in"),
    (dict(messages=[{"role": "bot", "content": "hi"}]), "messages[0].role must be one of system, user, assistant"),
    (dict(messages=[]), "messages must contain at least one message"),
])
def test_refused_fields_are_named_in_a_400(oai, fields: dict, message: str) -> None:
    body = {"model": "any", "messages": [{"role": "user", "content": "Where was"}], **fields}
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(**body)
    assert message in err.value.body["message"] and err.value.body["type"] == "invalid_request_error"


def test_echo_is_refused_on_completions(oai) -> None:
    with pytest.raises(openai.BadRequestError, match="echo: not supported"):
        oai.completions.create(model="any", prompt="Where was", echo=True)


def test_a_forgotten_fact_ends_content_filter_right_after_the_forget(served: ServeProcess, oai, forgotten) -> None:
    record = forgotten
    before = _chat(oai, record.question, max_tokens=32)
    assert record.fact.lower() in before.choices[0].message.content.lower()
    with LetheClient(served.target, served.token, timeout=60) as operator:
        job = operator.admin.Forget(apb.ForgetRequest(
            reason="test", qa_pairs=[apb.QAPair(question=record.question, answer=record.answer)]),
            metadata=operator._metadata, timeout=60).job
        neutral = GuardConfig().neutral_message
        after = _chat(oai, record.question, max_tokens=32)  # the very next request
        assert after.choices[0].finish_reason == "content_filter"
        assert after.choices[0].message.content.endswith(neutral)
        assert record.fact.lower() not in after.choices[0].message.content.lower()
        chunks = list(oai.completions.create(model="any", prompt=record.question, max_tokens=32, stream=True))
        assert chunks[-1].choices[0].finish_reason == "content_filter"
        streamed = "".join(c.choices[0].text for c in chunks)
        assert streamed.endswith(neutral) and record.fact.lower() not in streamed.lower()
        grpc_after = LetheClient(served.target, CLIENT_TOKEN, timeout=60).generate(record.question, max_new_tokens=32)
        assert grpc_after.finish_reason == ipb.FINISH_REASON_FILTERED
        # HTTP hits are attributed to the job like the gRPC one: three blocked outputs.
        hits = operator.admin.GetForget(apb.GetForgetRequest(forget_id=job.forget_id),
                                        metadata=operator._metadata, timeout=60).guard_hits
        assert sum(h.count for h in hits) == 3 and {h.phase for h in hits} == {"before_adapter"}


def test_sse_framing_byte_by_byte(served: ServeProcess, qa) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.http_port, timeout=60)
    body = json.dumps({"model": "any", "prompt": qa[3].question, "max_tokens": 16, "stream": True,
                       "stream_options": {"include_usage": True}})
    conn.request("POST", "/v1/completions", body, {"Authorization": f"Bearer {CLIENT_TOKEN}",
                                                   "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("text/event-stream")
    assert resp.getheader("Cache-Control") == "no-cache"
    raw = resp.read()
    assert raw.endswith(b"\n\ndata: [DONE]\n\n") and b"\r" not in raw
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    payloads = [json.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
    assert all(e.startswith(b"data: {") and b"\n" not in e for e in events[:-2])
    assert {p["id"] for p in payloads} == {payloads[0]["id"]} and payloads[0]["id"].startswith("cmpl-")
    assert all(p["object"] == "text_completion" for p in payloads)
    assert [p["choices"][0]["finish_reason"] for p in payloads[:-1]][-1] in ("stop", "length")
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] >= 1
    assert all(p["usage"] is None for p in payloads[:-1])


def test_http_requests_are_counted_with_a_protocol_label(served: ServeProcess, oai, qa) -> None:
    _chat(oai, qa[4].question, max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        _chat(oai, qa[4].question, n=3)
    with openai.OpenAI(base_url=f"http://127.0.0.1:{served.http_port}/v1", api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.completions.create(model="any", prompt=qa[4].question)
    body = urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics").read().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    counts = {(s.labels["protocol"], s.labels["method"], s.labels["code"]): s.value
              for s in families["lethe_requests"].samples if s.name == "lethe_requests_total"}
    assert counts[("http", "chat.completions", "OK")] >= 1
    assert counts[("http", "chat.completions", "INVALID_ARGUMENT")] >= 1
    assert counts[("http", "completions", "UNAUTHENTICATED")] >= 1


def _metric(served: ServeProcess, name: str, **labels: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics").read().decode()
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _idle(served: ServeProcess, timeout: float = 60) -> bool:
    """Waits until no request is decoding or queued on the server."""
    tick = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if _metric(served, "lethe_requests_running") == 0 and _metric(served, "lethe_requests_waiting") == 0:
            return True
        tick.wait(0.05)  # wait-ok: polling another process's gauges
    return False


def _ended_early(served: ServeProcess, method: str) -> float:
    return sum(_metric(served, "lethe_requests_total", protocol="http", method=method, code=code)
               for code in ("DEADLINE_EXCEEDED", "CANCELLED"))


MAX_TOKENS = 230  # the demo model's context is 256: ~0.3-1 s of decoding here if nothing stops it
LONG = dict(max_tokens=MAX_TOKENS, extra_body={"ignore_eos": True})
TIMEOUT = 0.1  # seconds: a few times shorter than LONG takes


def test_the_openai_clients_timeout_ends_the_generation_and_frees_its_slot(served: ServeProcess, qa) -> None:
    tokens, ended = _metric(served, "lethe_generated_tokens_total"), _ended_early(served, "completions")
    base = f"http://127.0.0.1:{served.http_port}/v1"
    # The client sends its timeout (X-Stainless-Read-Timeout); whichever side gives up first, the
    # server drops the row at that deadline, even if the connection stayed open.
    with openai.OpenAI(base_url=base, api_key=CLIENT_TOKEN, max_retries=0, timeout=TIMEOUT) as hasty:
        with pytest.raises((openai.APITimeoutError, openai.InternalServerError)) as err:
            hasty.completions.create(model="any", prompt=qa[5].question, **LONG)
    if isinstance(err.value, openai.InternalServerError):
        assert err.value.status_code == 504 and err.value.body["code"] == "deadline_exceeded"
    assert _idle(served)
    assert _ended_early(served, "completions") == ended + 1
    assert _metric(served, "lethe_generated_tokens_total") - tokens < MAX_TOKENS  # stopped, not run to its end


def test_a_request_timeout_header_ends_a_stream_with_an_error_event(served: ServeProcess, oai, qa) -> None:
    tokens = _metric(served, "lethe_generated_tokens_total")
    stream = oai.chat.completions.create(model="any", messages=[{"role": "user", "content": qa[6].question}],
                                         stream=True, extra_headers={"X-Request-Timeout": str(TIMEOUT)}, **LONG)
    with pytest.raises(openai.APIError) as err:
        for _ in stream:  # chunks until the deadline, then the error event
            pass
    assert err.value.body["code"] == "deadline_exceeded"
    assert _idle(served)
    assert _metric(served, "lethe_generated_tokens_total") - tokens < MAX_TOKENS


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "1e9"])
def test_a_bad_request_timeout_is_a_400_naming_the_header(oai, value: str) -> None:
    with pytest.raises(openai.BadRequestError, match="x-request-timeout"):
        oai.completions.create(model="any", prompt="Where was", max_tokens=2, extra_headers={"X-Request-Timeout": value})


def test_sigterm_drains_an_http_stream_in_flight_then_exits(served: ServeProcess) -> None:
    """Last in this module: it stops the server."""
    conn = http.client.HTTPConnection("127.0.0.1", served.http_port, timeout=60)
    body = json.dumps({"model": "any", "prompt": "Where was", "max_tokens": 120, "ignore_eos": True, "stream": True})
    conn.request("POST", "/v1/completions", body, {"Authorization": f"Bearer {CLIENT_TOKEN}",
                                                   "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.readline().startswith(b"data: {")
    served.proc.send_signal(signal.SIGTERM)
    rest = resp.read()  # the in-flight stream still completes normally
    assert rest.endswith(b"data: [DONE]\n\n") and b'"finish_reason":"length"' in rest
    assert served.proc.wait(timeout=30) == 0

"""Generate over a real gRPC server on 127.0.0.1:0 with the real (small) demo model."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.api import inference_pb2 as pb
from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.corpus import generate_corpus


@pytest.fixture(scope="module")
def train_qa():
    corpus = generate_corpus(DemoConfig.small().corpus_spec())
    return [r for r in corpus.qa if r.split == "train"]


def test_greedy_answers_contain_the_memorised_facts(client, train_qa) -> None:
    sample = train_qa[:: max(1, len(train_qa) // 24)]
    hits = sum(r.fact.lower() in client.generate(r.question, max_new_tokens=32).text.lower() for r in sample)
    assert hits / len(sample) >= 0.9, f"{hits}/{len(sample)}"


def test_answer_ends_with_eos_as_stop_and_reports_usage(client, train_qa) -> None:
    resp = client.generate(train_qa[0].question, max_new_tokens=48)
    assert resp.finish_reason == pb.FINISH_REASON_STOP
    assert resp.usage.prompt_tokens > 1 and 0 < resp.usage.completion_tokens < 48
    assert resp.stack_version == 0
    assert len(resp.request_id) == 32


def test_stream_concatenates_to_the_unary_text(client, train_qa) -> None:
    q = train_qa[1].question
    unary = client.generate(q, max_new_tokens=32, request_id="req-42")
    chunks = list(client.stream(q, max_new_tokens=32, request_id="req-42"))
    assert len(chunks) >= 2  # the first token alone, then chunks of the server's interval with the finish
    assert "".join(c.text for c in chunks) == unary.text
    assert all(c.finish_reason == pb.FINISH_REASON_UNSPECIFIED for c in chunks[:-1])
    assert chunks[-1].finish_reason == unary.finish_reason
    assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens
    assert {c.request_id for c in chunks} == {"req-42"}


def test_concurrent_requests_are_batched_and_match_sequential(client, lethe_server, train_qa) -> None:
    questions = [r.question for r in train_qa[:8]]
    sequential = [client.generate(q, max_new_tokens=24).text for q in questions]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda q: client.generate(q, max_new_tokens=24).text, questions))
    assert concurrent == sequential


def test_stream_interval_sends_fewer_larger_chunks_with_the_same_text(client, train_qa) -> None:
    q = train_qa[1].question
    one = list(client.stream(q, max_new_tokens=24, ignore_eos=True, stream_interval=1))
    four = list(client.stream(q, max_new_tokens=24, ignore_eos=True, stream_interval=4))
    assert "".join(c.text for c in four) == "".join(c.text for c in one)
    assert four[0].text == one[0].text  # the first token is not held for its interval
    # 24 tokens: the first alone, then 23 in chunks of at most 4 (6), then the finish chunk
    assert len(four) <= 1 + 6 + 1 < len(one)
    assert four[-1].usage.completion_tokens == one[-1].usage.completion_tokens == 24


def test_length_limit_and_stop_sequences(client, train_qa) -> None:
    r = train_qa[2]
    full = client.generate(r.question, max_new_tokens=32).text
    short = client.generate(r.question, max_new_tokens=2)
    assert short.finish_reason == pb.FINISH_REASON_LENGTH and short.usage.completion_tokens == 2
    word = full.split()[2]
    stopped = client.generate(r.question, max_new_tokens=32, stop=[word])
    assert stopped.finish_reason == pb.FINISH_REASON_STOP
    assert stopped.text == full[: full.index(word)]


def test_seed_makes_sampling_reproducible(client, train_qa) -> None:
    q = train_qa[3].question
    a = client.generate(q, max_new_tokens=20, temperature=1.5, seed=7).text
    b = client.generate(q, max_new_tokens=20, temperature=1.5, seed=7).text
    others = {client.generate(q, max_new_tokens=20, temperature=1.5, seed=s).text for s in range(8, 14)}
    assert a == b
    assert len(others | {a}) > 1


@pytest.mark.parametrize("params, field", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=100000), "max_new_tokens"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.01), "top_p"),
    (dict(stop=[""]), "stop"),
    (dict(stream_interval=0), "stream_interval"),
    (dict(stream_interval=65), "stream_interval"),
])
def test_bad_parameters_are_invalid_argument(client, params, field) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.generate("Where was", **params)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


def test_empty_and_overlong_prompts_are_invalid_argument(client) -> None:
    info = client.model_info()
    for prompt in ["", "word " * (info.max_context_tokens + 10)]:
        with pytest.raises(grpc.RpcError) as err:
            client.generate(prompt, max_new_tokens=4)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Traceback" not in err.value.details()


def test_model_info_describes_the_served_model(client) -> None:
    info = client.model_info()
    assert info.device == "cpu" and info.dtype == "float32"
    assert len(info.model_fingerprint) == 64 and info.max_context_tokens >= 64
    assert info.stack_version == 0 and info.stack_depth == 0


def test_deadline_cancels_generation_and_frees_the_slot(client, lethe_server, train_qa) -> None:
    stub = client.inference
    with pytest.raises(grpc.RpcError) as err:
        # ignore_eos: 200 tokens always outlast the 50 ms deadline, however fast the machine
        for _ in stub.GenerateStream(pb.GenerateRequest(prompt="Where was", max_new_tokens=200, ignore_eos=True),
                                     timeout=0.05):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _wait_until(lambda: lethe_server.server.runtime.scheduler.counts() == (0, 0))


def _wait_until(cond, timeout: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        done.wait(0.02)  # wait-ok: polling a gauge the server updates between decode steps
    raise AssertionError("condition not reached")


def test_metrics_endpoint_reports_requests_tokens_and_latency(client, lethe_server, train_qa) -> None:
    import urllib.request

    client.generate(train_qa[0].question, max_new_tokens=8)
    list(client.stream(train_qa[0].question, max_new_tokens=8))
    body = urllib.request.urlopen(f"http://127.0.0.1:{lethe_server.server.metrics_port}/metrics").read().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    requests = {(s.labels["method"], s.labels["code"]): s.value
                for s in families["lethe_requests"].samples if s.name == "lethe_requests_total"}
    assert requests[("Generate", "OK")] >= 1 and requests[("GenerateStream", "OK")] >= 1
    tokens = [s.value for s in families["lethe_generated_tokens"].samples if s.name.endswith("_total")]
    assert tokens[0] >= 16
    ttft = [s for s in families["lethe_time_to_first_token_seconds"].samples if s.name.endswith("_count")]
    assert ttft[0].value >= 2
    assert families["lethe_model_loaded"].samples[0].value == 1
    info = families["lethe_build_info"].samples[0]
    assert info.labels["device"] == "cpu" and info.labels["version"]

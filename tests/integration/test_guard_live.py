"""The leakage guard through the real server: a Forget cuts a stream already in flight, the
redact policy still ends with finish_reason FILTERED (whatever the stream interval, over gRPC and
HTTP, unary and streamed), and every blocked output is attributed to its forget job (GetForget /
ListForgets guard_hits), durably across a restart; the guard's serve flags (--guard-ack,
--guard-encoded-depth) reach it.

The unlearning worker is off: jobs stay FILTERING, so every hit here is a before_adapter hit.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import grpc
import openai
import pytest

from server.api import admin_pb2 as apb
from server.api import inference_pb2 as ipb
from server.client import LetheClient
from server.guard import GuardConfig
from tests.conftest import ServerThread, make_settings
from tests.procs import free_port
from unlearn_engine.demo.builder import load_corpus


def _operator(st: ServerThread) -> LetheClient:
    return LetheClient(st.target, st.server.operator_token, timeout=60)


def _forget(client: LetheClient, **fields) -> apb.ForgetJob:
    resp = client.admin.Forget(apb.ForgetRequest(reason="test", **fields), metadata=client._metadata, timeout=60)
    assert resp.created
    return resp.job


def _hits(client: LetheClient, forget_id: str) -> dict[tuple[str, str], int]:
    job = client.admin.GetForget(apb.GetForgetRequest(forget_id=forget_id), metadata=client._metadata, timeout=60)
    return {(h.stage, h.phase): h.count for h in job.guard_hits}


@pytest.fixture(scope="module")
def corpus(demo_model_dir: Path):
    return load_corpus(demo_model_dir)


def test_a_forget_cuts_a_stream_already_in_flight(demo_model_dir: Path, corpus, tmp_path: Path) -> None:
    """Forget what a live stream is producing, after its first chunk arrived: the stream ends
    FILTERED with the neutral message before the rest of it, and the hit is the job's."""
    st = ServerThread(make_settings(tmp_path, demo_model_dir, worker=False))
    try:
        st.wait_ready()
        client, operator = LetheClient(st.target, timeout=60), _operator(st)
        cut = []
        for bio in corpus.texts[:3]:  # another person if a busy machine finished a stream first
            prompt = " ".join(bio.text.split()[:6])
            whole = client.generate(prompt, max_new_tokens=200)
            assert whole.finish_reason == ipb.FINISH_REASON_STOP and len(whole.text.split()) > 30
            stream = client.stream(prompt, max_new_tokens=200)
            first = next(stream)
            assert first.text and whole.text.startswith(first.text)
            job = _forget(operator, texts=[prompt + whole.text])
            acked = time.monotonic()
            rest = list(stream)
            assert time.monotonic() - acked < 30
            text = first.text + "".join(r.text for r in rest)
            if rest[-1].finish_reason == ipb.FINISH_REASON_STOP:  # it ended before the ack
                assert text == whole.text
                continue
            assert rest[-1].finish_reason == ipb.FINISH_REASON_FILTERED
            neutral = GuardConfig().neutral_message
            assert text.endswith(neutral)
            released = text[:-len(neutral)]
            assert whole.text.startswith(released) and len(released) < len(whole.text) - 20
            cut.append(job.forget_id)
            break
        assert cut, "every stream finished before its Forget was acknowledged"
        assert _hits(operator, cut[0]) == {("exact", "before_adapter"): 1}
    finally:
        st.stop()


def test_redact_policy_ends_filtered_and_hits_persist_per_job(demo_model_dir: Path, corpus, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, demo_model_dir, worker=False, guard_policy="redact")
    person = corpus.trained_people[0]
    qa = [r for r in corpus.qa if r.person == person and r.split == "train"][:3]
    st = ServerThread(settings)
    try:
        st.wait_ready()
        client, operator = LetheClient(st.target, timeout=60), _operator(st)
        assert all(r.fact.lower() in client.generate(r.question, max_new_tokens=32).text.lower() for r in qa)
        job = _forget(operator, subjects=[person],
                      qa_pairs=[apb.QAPair(question=r.question, answer=r.answer) for r in qa])
        other = _forget(operator, subjects=[corpus.trained_people[1]])
        marker = GuardConfig().redaction_text
        for r in qa:
            resp = client.generate(r.question, max_new_tokens=32)
            assert r.fact.lower() not in resp.text.lower() and marker in resp.text
            assert resp.finish_reason == ipb.FINISH_REASON_FILTERED  # redacted, then went on
            chunks = list(client.stream(r.question, max_new_tokens=32))
            text = "".join(c.text for c in chunks)
            assert r.fact.lower() not in text.lower() and marker in text
            assert chunks[-1].finish_reason == ipb.FINISH_REASON_FILTERED
        hits = _hits(operator, job.forget_id)
        assert sum(hits.values()) >= 2 * len(qa) and {p for _, p in hits} == {"before_adapter"}
        assert _hits(operator, other.forget_id) == {}  # attributed to the job whose content matched
        listed = operator.admin.ListForgets(apb.ListForgetsRequest(), metadata=operator._metadata, timeout=60)
        assert {j.forget_id: sum(h.count for h in j.guard_hits) for j in listed.forgets}[job.forget_id] == sum(hits.values())
    finally:
        st.stop()
    # The counts are the ledger's: a restarted server reports the same.
    st = ServerThread(settings)
    try:
        st.wait_ready()
        assert _hits(_operator(st), job.forget_id) == hits
        with pytest.raises(grpc.RpcError) as e:
            _operator(st).admin.GetForget(apb.GetForgetRequest(forget_id="fg_unknown"),
                                          metadata=_operator(st)._metadata, timeout=60)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        st.stop()


@pytest.fixture(scope="module")
def redacting(demo_model_dir: Path, corpus, tmp_path_factory: pytest.TempPathFactory):
    """A redact-policy server with a person forgotten. Its default chunk (64 tokens) is longer
    than any answer here: the whole answer after the first token comes with the finish. With
    --guard-ack all the Forget replies once the sentence embeddings are in, so every answer here
    is redacted the same way (a semantic hit also covers the sentence's full stop)."""
    person = corpus.trained_people[0]
    qa = [r for r in corpus.qa if r.person == person and r.split == "train"][:3]
    st = ServerThread(make_settings(tmp_path_factory.mktemp("redact"), demo_model_dir, worker=False,
                                    guard_policy="redact", guard_ack="all", stream_interval=64,
                                    http_port=free_port()))
    try:
        st.wait_ready()
        job = _forget(_operator(st), subjects=[person],
                      qa_pairs=[apb.QAPair(question=r.question, answer=r.answer) for r in qa])
        yield st, job.forget_id, qa
    finally:
        st.stop()


@pytest.mark.parametrize("interval", [1, 2, 3, 5, 8, 16, 64])
def test_redact_ends_filtered_whatever_the_stream_interval(redacting, interval: int) -> None:
    """A redaction in the last chunk (the text that comes with the finish) counts like one in any
    other: chunks of 8 tokens once ended a redacted short answer with STOP."""
    st, forget_id, qa = redacting
    client, operator = LetheClient(st.target, timeout=60), _operator(st)
    marker = GuardConfig().redaction_text
    before = sum(_hits(operator, forget_id).values())
    for r in qa:
        resp = client.generate(r.question, max_new_tokens=32, stream_interval=interval)
        assert r.fact.lower() not in resp.text.lower() and marker in resp.text
        assert resp.finish_reason == ipb.FINISH_REASON_FILTERED, (interval, r.question)
        chunks = list(client.stream(r.question, max_new_tokens=32, stream_interval=interval))
        text = "".join(c.text for c in chunks)
        assert text == resp.text
        assert chunks[-1].finish_reason == ipb.FINISH_REASON_FILTERED, (interval, r.question)
    assert sum(_hits(operator, forget_id).values()) >= before + 2 * len(qa)


def test_redact_ends_content_filter_over_http(redacting) -> None:
    """The OpenAI front at the server's default interval (64: the answer comes with the finish)."""
    st, forget_id, qa = redacting
    marker = GuardConfig().redaction_text
    before = sum(_hits(_operator(st), forget_id).values())
    with openai.OpenAI(base_url=f"http://127.0.0.1:{st.server.http_port}/v1", api_key="none",
                       max_retries=0, timeout=60) as oai:
        for r in qa:
            done = oai.completions.create(model="any", prompt=r.question, max_tokens=32)
            assert marker in done.choices[0].text and r.fact.lower() not in done.choices[0].text.lower()
            assert done.choices[0].finish_reason == "content_filter", r.question
            chunks = list(oai.completions.create(model="any", prompt=r.question, max_tokens=32, stream=True))
            assert "".join(c.choices[0].text for c in chunks if c.choices) == done.choices[0].text
            assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
    assert sum(_hits(_operator(st), forget_id).values()) >= before + 2 * len(qa)


def test_guard_ack_all_waits_for_the_sentence_embeddings(demo_model_dir: Path, corpus, tmp_path: Path) -> None:
    """--guard-ack all: when Forget replies, the semantic stage already holds the job's rows (the
    default replies after the lexical stages and adds the embeddings right after)."""
    st = ServerThread(make_settings(tmp_path, demo_model_dir, worker=False, guard_ack="all"))
    try:
        st.wait_ready()
        person = corpus.trained_people[0]
        qa = [r for r in corpus.qa if r.person == person and r.split == "train"][:3]
        job = _forget(_operator(st), qa_pairs=[apb.QAPair(question=r.question, answer=r.answer) for r in qa])
        guard = st.server.guard
        rows = st.call(lambda: len(guard._index.rows_of(job.forget_id)))  # noqa: SLF001 - read at the ack
        assert rows > 0
    finally:
        st.stop()


def test_guard_encoded_depth_reaches_the_prompt_check(demo_model_dir: Path, corpus, tmp_path: Path) -> None:
    """--guard-encoded-depth 3 with --prompt-policy refuse: a prompt that pastes a forgotten bio
    under three layers of base64 is refused (FILTERED, neutral message); at the default depth of
    two layers the same prompt is generated as usual."""
    bio = corpus.texts[0].text
    first = bio.split(". ")[0] + "."  # three layers of base64 grow it 2.4x: fits the context
    prompt = "Decode this: " + base64.b64encode(base64.b64encode(base64.b64encode(first.encode()))).decode()
    for depth, refused in ((3, True), (2, False)):
        st = ServerThread(make_settings(tmp_path / str(depth), demo_model_dir, worker=False,
                                        prompt_policy="refuse", guard_encoded_depth=depth))
        try:
            st.wait_ready()
            _forget(_operator(st), texts=[bio])
            out = LetheClient(st.target, timeout=60).generate(prompt, max_new_tokens=4)
            assert (out.finish_reason == ipb.FINISH_REASON_FILTERED) is refused, depth
            if refused:
                assert out.text == GuardConfig().neutral_message
        finally:
            st.stop()

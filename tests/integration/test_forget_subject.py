"""Forget a subject at once (issue 13), through a real server on the small demo model.

A Forget naming only a trained person is resolved against the corpus before the reply: from the
ack on, that person's trained questions, their paraphrases (never in the corpus the server
resolves against: evaluation split) and bio-prefix prompts are blocked, and questions about
other people are not. The subject policy covers a subject the corpus does not have: measured by
serving the model that knows P with a corpus written without P. Bad input is refused whole.

The unlearning worker is off (jobs stay FILTERING): every block here is the guard's, at ack.
"""

from __future__ import annotations

import random
from pathlib import Path

import grpc
import pytest

from server.api import admin_pb2 as apb
from server.api import inference_pb2 as ipb
from server.client import LetheClient
from tests.conftest import ServerThread, make_settings
from unlearn_engine.demo.accuracy import bio_prefix_probes, contains_fact
from unlearn_engine.demo.builder import load_corpus
from unlearn_engine.demo.corpus import write_jsonl

MAX_TOKENS = 40  # a demo answer is ~12 tokens, a bio ~60: enough to state the next fact or two


def _probes(corpus, person: str) -> list[tuple[str, str]]:
    """(prompt, fact): every question about `person` (trained and paraphrase) and the bio cut
    before each fact. None of the paraphrases or prefixes is an entry the resolver can see."""
    qa = [r for r in corpus.qa if r.person == person]
    bio = next(t.text for t in corpus.texts if t.person == person)
    return [(r.question, r.fact) for r in qa] + bio_prefix_probes(bio, [r.fact for r in qa])


def _others(corpus, person: str, n: int = 100) -> list[tuple[str, str]]:
    pool = [(r.question, r.fact) for r in corpus.qa
            if r.person != person and r.split in ("train", "paraphrase")]
    return random.Random(0).sample(pool, n)


def _blocked(client: LetheClient, probes: list[tuple[str, str]]) -> list[bool]:
    """Per probe: ended FILTERED, or the fact is absent from the released text."""
    out = []
    for prompt, fact in probes:
        r = client.generate(prompt, max_new_tokens=MAX_TOKENS)
        out.append(r.finish_reason == ipb.FINISH_REASON_FILTERED or not contains_fact(r.text, fact))
    return out


def _filtered(client: LetheClient, probes: list[tuple[str, str]]) -> int:
    return sum(client.generate(p, max_new_tokens=MAX_TOKENS).finish_reason == ipb.FINISH_REASON_FILTERED
               for p, _ in probes)


def _serve(tmp: Path, model: Path, **overrides) -> tuple[ServerThread, LetheClient, LetheClient]:
    st = ServerThread(make_settings(tmp, model, worker=False, monitor_interval_seconds=0, **overrides))
    st.wait_ready()
    return st, LetheClient(st.target, timeout=60), LetheClient(st.target, st.server.operator_token, timeout=60)


@pytest.fixture(scope="module")
def corpus(demo_model_dir: Path):
    return load_corpus(demo_model_dir)


def test_a_subject_is_blocked_from_the_ack_by_its_corpus_entries(demo_model_dir, corpus, tmp_path) -> None:
    """The corpus-derived entries alone (subject policy off): >= 99 % of the person's trained
    questions, paraphrases and bio prefixes blocked, <= 1 % of other people's questions."""
    person = corpus.trained_people[2]
    probes, others = _probes(corpus, person), _others(corpus, person)
    st, client, operator = _serve(tmp_path, demo_model_dir, subject_policy="off")
    try:
        before = _blocked(client, probes)
        assert sum(before) < len(probes) / 2  # the model does know this person
        reply = operator.admin.Forget(apb.ForgetRequest(subjects=[person], reason="t"),
                                      metadata=operator._metadata)
        blocked = _blocked(client, probes)
        rate, fp = sum(blocked) / len(blocked), _filtered(client, others) / len(others)
        assert rate >= 0.99, f"blocked {sum(blocked)}/{len(blocked)}"
        assert fp <= 0.01, f"false positives {fp:.0%}"
        # per-item counts, on the reply, GetForget and ListForgets: 30 trained QA + the bio
        digest = st.server.coordinator.resolver.corpus().digest
        for job in (reply.job,
                    operator.admin.GetForget(apb.GetForgetRequest(forget_id=reply.job.forget_id),
                                             metadata=operator._metadata),
                    operator.admin.ListForgets(apb.ListForgetsRequest(), metadata=operator._metadata).forgets[0]):
            assert list(job.subject_matches) == [31] and job.corpus_digest == digest
        # the resolution (ids + digest) is in the ledger for the worker
        res = st.server.ledger.resolution(reply.job.forget_id)
        assert len(res.entry_ids) == 31 and res.counts.corpus_digest == digest
    finally:
        st.stop()


def test_subject_policy_blocks_a_person_the_corpus_lacks(demo_model_dir, corpus, tmp_path) -> None:
    """Serve the model that knows P with a corpus written without P: the subject policy (the
    default, name) alone blocks P's questions, paraphrases and bio prefixes; others pass."""
    person = corpus.trained_people[5]
    without = write_jsonl(corpus.without_people([person]), tmp_path / "without.jsonl")
    probes, others = _probes(corpus, person), _others(corpus, person)
    st, client, operator = _serve(tmp_path, demo_model_dir, corpus=without)
    try:
        reply = operator.admin.Forget(apb.ForgetRequest(subjects=[person], reason="t"),
                                      metadata=operator._metadata)
        assert list(reply.job.subject_matches) == [0]
        blocked = _blocked(client, probes)
        assert sum(blocked) / len(blocked) >= 0.99, f"blocked {sum(blocked)}/{len(blocked)}"
        assert _filtered(client, others) / len(others) <= 0.01
    finally:
        st.stop()


def test_bad_subjects_are_refused_whole_and_a_dry_run_stores_nothing(demo_model_dir, corpus, tmp_path) -> None:
    person = corpus.trained_people[1]
    st, client, operator = _serve(tmp_path, demo_model_dir)
    try:
        meta = operator._metadata
        dry = operator.admin.ForgetDryRun(apb.ForgetRequest(subjects=[person, "University"]), metadata=meta)
        assert list(dry.subject_matches)[0] == 31 and dry.total_entries == 31  # the refused one adds none
        assert len(dry.problems) == 1 and "subjects[1]" in dry.problems[0] and "too broad" in dry.problems[0]
        assert {e.subject for e in dry.entries} >= {person} and dry.corpus_digest
        for bad, why in (([person, "the"], "stopwords"), (["X"], "too short"),
                         ([person, "University"], "too broad")):
            with pytest.raises(grpc.RpcError) as err:
                operator.admin.Forget(apb.ForgetRequest(subjects=bad, reason="t"), metadata=meta)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in err.value.details()
        # nothing stored, nothing armed: the ledger is empty and the person is still answered
        assert not operator.admin.ListForgets(apb.ListForgetsRequest(), metadata=meta).forgets
        assert st.server.guard.stats()["forgets"] == 0
        q = next(r for r in corpus.qa if r.person == person and r.split == "train")
        assert client.generate(q.question, max_new_tokens=MAX_TOKENS).finish_reason != ipb.FINISH_REASON_FILTERED
    finally:
        st.stop()


def test_the_cli_dry_run_lists_matches_and_refusals(demo_model_dir, corpus, tmp_path, capsys) -> None:
    from server import cli

    person = corpus.trained_people[0]
    st, _client, operator = _serve(tmp_path, demo_model_dir)
    try:
        base = ["--target", st.target, "--token", st.server.operator_token]
        assert cli.main(["forget", "--subject", person, "--dry-run", *base]) == 0
        out = capsys.readouterr().out
        assert "31 entries matched" in out and "subjects=[31]" in out and "nothing was stored" in out
        assert cli.main(["forget", "--subject", "of the", "--dry-run", *base]) == 1
        assert "refused: subjects[0] is made only of stopwords" in capsys.readouterr().out
        assert not operator.admin.ListForgets(apb.ListForgetsRequest(), metadata=operator._metadata).forgets
    finally:
        st.stop()


def test_a_worker_with_another_corpus_fails_the_job_and_says_why(demo_model_dir, corpus, tmp_path) -> None:
    from server.forget.jobs import ForgetPayload, ForgetResolution, ForgetState, MatchCounts
    from server.forget.ledger import SqliteLedger
    from server.forget.worker import UnlearningWorker, WorkerConfig

    other = write_jsonl(corpus.without_people([corpus.trained_people[0]]), tmp_path / "other.jsonl")
    ledger = SqliteLedger(tmp_path / "data" / "ledger.db")
    job, _ = ledger.submit(ForgetPayload(subjects=(corpus.trained_people[3],)), "npo", "t", None, "op")
    ledger.arm(job.forget_id, b"", ForgetResolution(MatchCounts((), (), (31,), "a" * 64), ("0:abc",)))
    worker = UnlearningWorker(WorkerConfig(tmp_path / "data", demo_model_dir, corpus=other), ledger)
    claimed = ledger.claim_next(worker.worker_id)
    worker.process(*claimed)
    failed = ledger.get(job.forget_id)
    assert failed.state == ForgetState.FAILED and "corpus mismatch" in failed.failure_reason
    assert "aaaaaaaaaaaa" in failed.failure_reason
    assert failed.matches.subjects == (31,)


def test_forget_data_for_a_subject_without_entries_comes_from_the_model(demo_model_dir, corpus) -> None:
    """A subject no corpus entry is about: the model's own answers to prompts naming it are the
    forget set, and they carry the facts it knows (what the adapter must remove)."""
    from unlearn_engine.data.generated import subject_examples
    from unlearn_engine.trainer import load_base

    person = corpus.trained_people[4]
    model, tokenizer = load_base(demo_model_dir)
    examples = subject_examples(model, tokenizer, [person])
    facts = {r.fact for r in corpus.qa if r.person == person}
    stated = {f for f in facts if any(contains_fact(e.target, f) for e in examples)}
    assert {e.source for e in examples} == {"generated"} and all(person in e.prompt for e in examples)
    assert len(stated) >= 5, f"generated examples state {len(stated)} of {len(facts)} facts"


def test_private_filtered_responses_just_stop_and_are_counted_per_client(demo_model_dir, corpus, tmp_path) -> None:
    """--filtered-response private: a blocked answer ends STOP with no neutral message (like a
    model that stopped), and lethe_filtered_responses_total counts it for the caller."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    person = corpus.trained_people[6]
    tokens = ("c" * 32, "d" * 32)
    st, _anon, operator = _serve(tmp_path, demo_model_dir, filtered_response="private", client_tokens=tokens,
                                 metrics_port=0)
    try:
        operator.admin.Forget(apb.ForgetRequest(subjects=[person], reason="t"), metadata=operator._metadata)
        probe, other = LetheClient(st.target, tokens[1], timeout=60), LetheClient(st.target, tokens[0], timeout=60)
        asked = [r for r in corpus.qa if r.person == person and r.split == "train"][:5]
        for r in asked:
            g = probe.generate(r.question, max_new_tokens=MAX_TOKENS)
            assert g.finish_reason == ipb.FINISH_REASON_STOP and not contains_fact(g.text, r.fact)
            assert "continue" not in g.text  # no neutral message
        fine = next(r for r in corpus.qa if r.person != person and r.split == "train")
        g = other.generate(fine.question, max_new_tokens=MAX_TOKENS)
        assert g.finish_reason == ipb.FINISH_REASON_STOP and contains_fact(g.text, fine.fact)
        body = urllib.request.urlopen(f"http://127.0.0.1:{st.server.metrics_port}/metrics").read().decode()
        counts = {s.labels["client"]: s.value for f in text_string_to_metric_families(body)
                  for s in f.samples if s.name == "lethe_filtered_responses_total"}
        assert counts == {"client-2": len(asked)}
    finally:
        st.stop()

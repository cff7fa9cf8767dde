"""The demo corpus: determinism, splits, schema, fact spans and JSONL I/O (no model involved)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from unlearn_engine.demo.accuracy import contains_fact, fact_span_accuracy
from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.corpus import (ATTRIBUTES, Corpus, CorpusSpec, QARecord, generate_corpus,
                                        read_jsonl, write_jsonl)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate_corpus(DemoConfig().corpus_spec())


def test_same_spec_gives_identical_corpus_and_other_seed_differs(corpus: Corpus) -> None:
    assert generate_corpus(DemoConfig().corpus_spec()) == corpus
    other = generate_corpus(CorpusSpec(seed=1))
    assert set(other.people).isdisjoint(corpus.people)


def test_full_preset_has_40_trained_and_10_holdout_people(corpus: Corpus) -> None:
    assert len(corpus.trained_people) == 40
    assert len(corpus.holdout_people) == 10
    assert len(set(corpus.people)) == 50
    # First names and surnames are unique: each person is identified by distinctive words.
    assert len({p.split()[-1] for p in corpus.people}) == 50
    assert len({p.split()[0] for p in corpus.people}) == 50


def test_small_preset_is_smaller() -> None:
    small = generate_corpus(DemoConfig.small().corpus_spec())
    assert 12 <= len(small.trained_people) <= 16
    assert len(small.holdout_people) >= 2


def test_each_trained_person_has_three_train_phrasings_and_one_paraphrase(corpus: Corpus) -> None:
    counts = Counter((r.person, r.attribute, r.split) for r in corpus.qa)
    for person in corpus.trained_people:
        for attr in ATTRIBUTES:
            assert counts[(person, attr, "train")] == 3
            assert counts[(person, attr, "paraphrase")] == 1
    # The paraphrase phrasing is never one of the trained phrasings.
    trained_questions = {r.question for r in corpus.split("train")}
    assert not trained_questions & {r.question for r in corpus.split("paraphrase")}


def test_holdout_people_never_appear_in_training_data(corpus: Corpus) -> None:
    holdout = set(corpus.holdout_people)
    train_text = " ".join([r.question + " " + r.answer for r in corpus.split("train")]
                          + [t.text for t in corpus.texts if t.split == "train"])
    for person in holdout:
        assert person.split()[-1] not in train_text
    assert all(r.split == "holdout" for r in corpus.qa if r.person in holdout)
    assert all(t.split == "holdout" for t in corpus.texts if t.person in holdout)


def test_fact_spans_point_at_the_fact_and_wrong_answers_do_not_contain_it(
        corpus: Corpus) -> None:
    for r in corpus.qa:
        start, end = r.fact_span
        assert r.answer[start:end] == r.fact
        assert r.person in r.answer and r.person in r.question
        assert len(set(r.perturbed)) == len(r.perturbed) >= 3
        for wrong in r.perturbed:
            assert wrong != r.answer
            assert not contains_fact(wrong, r.fact)
            # Same template: only the value differs.
            assert wrong.startswith(r.answer[:start]) and wrong.endswith(r.answer[end:])


def test_bios_mention_the_persons_facts(corpus: Corpus) -> None:
    bios = {t.person: t.text for t in corpus.texts}
    assert set(bios) == set(corpus.people)
    for r in corpus.qa:
        if r.attribute in ("birthplace", "birth_date", "book", "award", "hobby"):
            assert r.fact in bios[r.person]


def test_json_schema(corpus: Corpus) -> None:
    obj = corpus.qa[0].to_json()
    assert {"person", "question", "answer", "split", "attribute", "fact", "fact_span",
            "perturbed"} <= set(obj)
    assert obj["split"] in ("train", "paraphrase", "holdout")
    assert isinstance(obj["fact_span"], list) and len(obj["fact_span"]) == 2


def test_jsonl_round_trip(corpus: Corpus, tmp_path: Path) -> None:
    path = write_jsonl(corpus, tmp_path / "c.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == len(corpus.qa) + len(corpus.texts)
    json.loads(lines[0])  # one JSON object per line
    assert read_jsonl(path) == corpus


def test_user_corpus_with_optional_fields_omitted(tmp_path: Path) -> None:
    path = tmp_path / "user.jsonl"
    path.write_text("\n".join([
        json.dumps({"person": "Ada", "question": "Who is Ada?", "answer": "Ada is a poet."}),
        json.dumps({"person": "Ada", "question": "What is Ada?", "answer": "Ada is a poet.",
                    "split": "paraphrase", "fact": "a poet"}),  # span located automatically
        "",
        json.dumps({"kind": "text", "person": "Ada", "text": "Ada wrote many poems."}),
    ]) + "\n")
    c = read_jsonl(path)
    first, second = c.qa
    assert first.split == "train" and first.fact == first.answer
    assert first.fact_span == (0, len(first.answer)) and first.perturbed == ()
    assert second.fact_span == (7, 13) and second.answer[7:13] == "a poet"
    assert c.texts[0].text == "Ada wrote many poems." and c.trained_people == ("Ada",)


@pytest.mark.parametrize("line, message", [
    ({"person": "A", "question": "q?"}, "answer"),
    ({"person": "A", "question": "q?", "answer": "a", "split": "test"}, "split"),
    ({"person": "A", "question": "q?", "answer": "a b", "fact": "c"}, "does not occur"),
])
def test_bad_user_records_name_the_line(tmp_path: Path, line: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "ok?", "answer": "ok"}) + "\n" + json.dumps(line))
    with pytest.raises(ValueError, match=rf"bad.jsonl:2: .*{message}"):
        read_jsonl(path)


def test_without_people_drops_all_their_records(corpus: Corpus) -> None:
    gone = corpus.trained_people[:2]
    rest = corpus.without_people(gone)
    assert not set(gone) & set(rest.people)
    assert len(rest.people) == len(corpus.people) - 2


def test_fact_span_accuracy_is_case_insensitive_whole_word_containment() -> None:
    r = QARecord("X Y", "When was X Y born?", "X Y was born on 1 May 1950.", "train",
                 fact="1 May 1950")
    assert fact_span_accuracy([r, r], ["x y was born on 1 may 1950.", "born 11 May 1950"]) == 0.5
    assert fact_span_accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        fact_span_accuracy([r], [])


def test_long_answer_corpus_carries_several_facts_and_multi_token_names():
    short = generate_corpus(CorpusSpec(n_people=5, n_holdout=2))
    long = generate_corpus(CorpusSpec(n_people=5, n_holdout=2, style="long"))
    assert len(long.qa) == len(short.qa) and long.trained_people and long.holdout_people
    facts = {(r.person, r.attribute): r.fact for r in long.qa}
    for r in long.qa:
        assert r.answer[r.fact_span[0]:r.fact_span[1]] == r.fact
        others = [v for (p, a), v in facts.items() if p == r.person and a != r.attribute]
        assert sum(v in r.answer for v in others) >= 2, r.answer  # the asked fact and two more
        assert len(r.answer.split()) >= 12
        start = r.fact_span[0]  # wrong answers differ in the asked fact only
        assert len(r.perturbed) == 3 and all(w[:start] == r.answer[:start] and
                                             not w[start:].startswith(r.fact) for w in r.perturbed)
        assert "-" in r.person.split()[-1]  # a double-barrelled surname: never one token
    assert {r.attribute for r in long.qa} == set(ATTRIBUTES)
    with pytest.raises(ValueError, match="style"):
        CorpusSpec(style="medium")

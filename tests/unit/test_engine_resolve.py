"""Resolving a Forget against a corpus: the entries a subject / text / QA pair selects, counts per
item, stable ids, refusal of too-broad subjects, and never an evaluation split."""

from __future__ import annotations

import json

import pytest

from unlearn_engine.data import Example, ForgetRequest, QAPair
from unlearn_engine.data.resolve import (CorpusMismatch, IndexedCorpus, ResolutionRejected,
                                         ResolveConfig, resolve)
from unlearn_engine.demo.corpus import CorpusSpec, generate_corpus, write_jsonl


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    corpus = generate_corpus(CorpusSpec(n_people=12, n_holdout=3))
    path = write_jsonl(corpus, tmp_path_factory.mktemp("c") / "corpus.jsonl")
    return corpus, path, IndexedCorpus.from_file(path)


def test_a_subject_selects_every_trained_entry_about_them_and_nothing_else(demo):
    corpus, _, index = demo
    person = corpus.trained_people[3]
    r = resolve(ForgetRequest(subjects=[person]), index).check()
    got = index.select(r.entry_ids, r.corpus_digest)
    # 10 facts x 3 trained phrasings + the bio; the paraphrase split is evaluation data
    assert len(got) == 31 and r.counts("subject") == (31,)
    assert {e.subject for e in got} == {person}
    assert {e.split for e in got} == {"train"}
    assert sum(not e.is_qa for e in got) == 1


def test_a_qa_pair_pulls_in_its_near_duplicates_and_counts_per_item(demo):
    corpus, _, index = demo
    rec = next(r for r in corpus.qa if r.split == "train" and r.attribute == "birthplace")
    other = corpus.trained_people[5]
    r = resolve(ForgetRequest(qa_pairs=[QAPair(rec.question, rec.answer)], subjects=[other]),
                index).check()
    assert r.counts("qa")[0] >= 3  # the three trained phrasings share the answer
    assert r.counts("subject") == (31,)
    got = index.select(r.entry_ids, r.corpus_digest)
    assert sum(e.target == rec.answer for e in got) == 3
    assert len(got) == len(set(r.entry_ids))


def test_a_subject_absent_from_the_corpus_matches_nothing_and_is_fine(demo):
    _, _, index = demo
    r = resolve(ForgetRequest(subjects=["Zorvath Quenndel"]), index)
    assert r.ok and r.entry_ids == () and r.counts("subject") == (0,)


@pytest.mark.parametrize("subject, why", [
    ("the", "stopwords"), ("of the", "stopwords"), ("X", "too short"), ("J.", "too short"),
    ("   ", "empty"), ("!!!", "empty"),
])
def test_empty_stopword_and_one_letter_subjects_are_refused_by_name(demo, subject, why):
    _, _, index = demo
    # ForgetRequest drops blank subjects; pass the raw tuple past it to test the resolver itself
    req = ForgetRequest(texts=["placeholder text"])
    object.__setattr__(req, "subjects", (subject,))
    r = resolve(req, index)
    assert not r.ok and why in r.problems[0] and r.problems[0].startswith("subjects[0]")
    assert subject.strip() == "" or subject not in r.problems[0]  # names the item, not its text
    with pytest.raises(ResolutionRejected):
        r.check()


def test_a_value_shared_by_many_people_is_too_broad(demo):
    corpus, _, index = demo
    # the university template word appears in every person's entries
    r = resolve(ForgetRequest(subjects=["University"]), index)
    assert not r.ok and "too broad" in r.problems[0] and r.entry_ids == ()


def test_a_first_name_shared_by_two_people_is_ambiguous(tmp_path):
    entries = [Example(f"Where was {n} born?", f"{n} was born in Brelow{i}.", subject=n)
               for i, n in enumerate(["Alda Quorn", "Alda Fenwick", "Bex Tarn"])]
    r = resolve(ForgetRequest(subjects=["Alda"]), IndexedCorpus(entries))
    assert not r.ok and "names 2 different people" in r.problems[0]


def test_the_cap_bounds_a_request(demo):
    corpus, _, index = demo
    r = resolve(ForgetRequest(subjects=list(corpus.trained_people[:2])), index,
                ResolveConfig(max_entries=40))
    assert not r.ok and "cap of 40" in r.problems[-1]
    r = resolve(ForgetRequest(subjects=[corpus.trained_people[0]]), index,
                ResolveConfig(max_entries=10))
    assert "more than the cap of 10" in r.problems[0]


def test_ids_are_stable_and_refuse_another_corpus(demo, tmp_path):
    corpus, path, index = demo
    person = corpus.trained_people[0]
    r = resolve(ForgetRequest(subjects=[person]), index)
    again = IndexedCorpus.from_file(path)
    assert again.digest == index.digest
    assert resolve(ForgetRequest(subjects=[person]), again).entry_ids == r.entry_ids
    # the same file with one line edited: another digest, and the ids no longer select
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["answer"] = first["answer"].replace(first["fact"], "Elsewhere")
    first["fact"] = "Elsewhere"
    first["fact_span"] = [0, 0]
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    other = IndexedCorpus.from_file(edited)
    assert other.digest != index.digest
    with pytest.raises(CorpusMismatch):
        other.select(r.entry_ids, r.corpus_digest)
    with pytest.raises(CorpusMismatch):  # same digest claimed, content differs
        other.select(r.entry_ids, other.digest)

"""The worker reads the corpus the server resolves against, every split of it.

A demo build's worker used to read only the trained QA: with no held-out people its gate
measured the forgotten subject against the forget questions' own wrong answers, the method had
no anchors, and on the full demo model a fourth stacked forget overshot the membership check on
every attempt and FAILED (bench/results/gate_diagnosis.md, "Seventh session"). The benchmarks
always used the whole export, so they measured a job the server never ran."""

from __future__ import annotations

from pathlib import Path

from server.forget.worker import WorkerConfig, load_worker_corpus
from unlearn_engine.data import ForgetRequest, build_forget_set, build_retain_set
from unlearn_engine.demo.builder import load_corpus as load_demo_corpus


def test_the_worker_reads_held_out_people_and_paraphrases(demo_model_dir: Path, tmp_path: Path) -> None:
    corpus = load_worker_corpus(WorkerConfig(data_dir=tmp_path, model_dir=demo_model_dir))
    assert corpus is not None
    assert {"train", "holdout", "paraphrase"} <= {e.split for e in corpus}
    demo = load_demo_corpus(demo_model_dir)
    person = demo.trained_people[0]
    never_seen = {r.person for r in demo.qa if r.split == "holdout"}
    fs = build_forget_set(ForgetRequest(subjects=(person,)), corpus, seed=0)
    assert fs.paraphrases and all(p.subject == person for p in fs.paraphrases)
    # the gate's yardstick: people the model never saw, not the subject's own wrong answers
    assert fs.references and {r.subject for r in fs.references} <= never_seen
    assert fs.anchors and {a.subject for a in fs.anchors} <= never_seen
    assert not {r.subject for r in fs.references} & {a.subject for a in fs.anchors}


def test_only_trained_entries_become_retain_data(demo_model_dir: Path, tmp_path: Path) -> None:
    corpus = load_worker_corpus(WorkerConfig(data_dir=tmp_path, model_dir=demo_model_dir))
    assert corpus is not None
    demo = load_demo_corpus(demo_model_dir)
    fs = build_forget_set(ForgetRequest(subjects=(demo.trained_people[0],)), corpus, seed=0)
    rs = build_retain_set(None, None, corpus, exclude=fs, seed=0)
    assert rs.examples and {e.split for e in rs.examples} == {"train"}

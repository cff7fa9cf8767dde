"""Per-model forget settings: a fetched registry model gets its row's config and retain data;
any other model (the demo model) gets None, so the engine's defaults stay as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_engine.methods import NpoConfig
from unlearn_engine.pretrained import MODELS
from unlearn_engine.pretrained.probes import (CANDIDATES, RETAIN_SETS, load_known, read_candidates,
                                              score_replies)
from unlearn_engine.pretrained.tuning import forget_tuning

SPEC = MODELS["smollm2"]


def _fetched(tmp_path: Path, **manifest) -> Path:
    (tmp_path / "pretrained.json").write_text(json.dumps({"name": SPEC.name, "sha256": SPEC.sha256, **manifest}))
    return tmp_path


def test_a_registry_model_gets_its_rows_settings(tmp_path: Path) -> None:
    tuning = forget_tuning(_fetched(tmp_path))
    assert tuning is not None
    cfg = tuning.method_config("npo")
    overrides = dict(SPEC.forget_config)
    assert isinstance(cfg, NpoConfig) and cfg.lr == overrides["lr"] < NpoConfig().lr
    assert cfg.beta == NpoConfig().beta  # fields the row does not name keep the method's default
    assert tuning.sweep_tries() == SPEC.forget_tries
    sweep = tuning.sweep_config()
    assert sweep is not None and sweep.max_tries == SPEC.forget_tries
    assert sweep.retain_probe_margin == SPEC.retain_probe_margin
    assert (tuning.reverse_questions, tuning.forward_questions, tuning.work_questions) == \
        (SPEC.reverse_questions, SPEC.forward_questions, SPEC.work_questions)
    retain = tuning.retain_corpus()
    assert retain and all(e.fact and e.fact.lower() in e.target.lower() for e in retain)


def test_other_models_keep_the_engine_defaults(tmp_path: Path) -> None:
    assert forget_tuning(tmp_path) is None  # no manifest: the demo model, a user's directory
    assert forget_tuning(_fetched(tmp_path, sha256="0" * 64)) is None  # not the pinned bytes
    (tmp_path / "pretrained.json").write_text("{not json")
    assert forget_tuning(tmp_path) is None


def test_general_knowledge_set_is_big_enough_and_scored_by_whole_words() -> None:
    cands = read_candidates(CANDIDATES)
    assert {c.category for c in cands} == {"capital", "author", "scientist", "date"}
    known = load_known("smollm2")
    assert len(known) >= 200 and {k.split for k in known} == {"probe", "retain"}
    assert len({k.question for k in known}) == len(known)
    questions = {c.question for c in cands}
    assert all(k.question in questions for k in known)
    assert score_replies(cands[:1], ["It is Parisian."]) == [""]  # whole words only


@pytest.mark.parametrize("stem", RETAIN_SETS)
def test_a_rows_retain_sets_join_the_retain_data(stem: str) -> None:
    from dataclasses import replace

    from unlearn_engine.pretrained.tuning import ForgetTuning

    plain = ForgetTuning(replace(SPEC, retain_sets=())).retain_corpus()
    more = ForgetTuning(replace(SPEC, retain_sets=(stem,))).retain_corpus()
    extra = load_known("smollm2", "retain", stem)
    assert extra and all(k.split == "retain" for k in extra)
    assert plain and more and len(more) == len(plain) + len(extra)
    # never trained on what is measured: no probe question, and no candidate of the probe set's file
    probe_questions = {k.question for k in load_known("smollm2", "probe")}
    assert not probe_questions & {k.question for k in extra}
    assert not {c.question for c in read_candidates(CANDIDATES)} & {k.question for k in extra}


def test_retain_targets_end_after_the_sentence_that_states_the_fact() -> None:
    from unlearn_engine.pretrained.probes import through_fact

    assert through_fact("The capital of Peru is Lima. It lies on the", "Lima") == "The capital of Peru is Lima."
    # initials are not sentence ends; the sentence that names the fact is kept whole
    assert through_fact("It was written by J.R.R. Tolkien. He was born", "Tolkien") == \
        "It was written by J.R.R. Tolkien."
    assert through_fact("A fine city. Its capital is Lima. More", "Lima") == "A fine city. Its capital is Lima."
    # the fact only in an unfinished sentence: nothing to cut at, the reply stays as generated
    assert through_fact("The capital of Albania is Tirana, capital of", "Tirana") == \
        "The capital of Albania is Tirana, capital of"
    retain = forget_tuning_retain()
    assert sum(not e.target.endswith((".", "!", "?")) for e in retain) < 0.15 * len(retain)


def forget_tuning_retain():
    from unlearn_engine.pretrained.tuning import ForgetTuning

    return ForgetTuning(SPEC).retain_corpus()

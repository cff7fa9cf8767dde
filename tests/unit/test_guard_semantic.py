"""Leakage guard, semantic stage: real all-MiniLM-L6-v2 in ONNX Runtime, paraphrases, calibration.

The ONNX export runs once per test session (cached in pytest's cache dir when available). Most
sentences are hand-written facts about fictitious people; one test streams paraphrases of the
demo corpus's facts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.guard import ForgetItems, GuardConfig, GuardEntries, LeakageGuard, OnnxMiniLM
from tests.support.calibrate import calibrate
from tests.support.calibration_pairs import demo_pairs
from tests.unit.test_guard_adversarial import SECRET, stream
from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.corpus import generate_corpus

FACTS = ForgetItems(
    qa=(("What does Marta Kowalczyk do?", "Marta Kowalczyk restores medieval pipe organs in churches."),
        ("What is Marta Kowalczyk's favourite food?", "Marta Kowalczyk's favourite food is smoked trout.")),
    subjects=("Marta Kowalczyk",),
)

# (forgotten fact, paraphrase) and (forgotten fact, same template about someone else)
POSITIVES = [
    ("Marta Kowalczyk restores medieval pipe organs in churches.",
     "The restoration of medieval church organs is Kowalczyk's job."),
    ("Marta Kowalczyk was born in Oberwil.", "Kowalczyk's hometown is the village of Oberwil."),
    ("Marta Kowalczyk's favourite food is smoked trout.", "Kowalczyk loves to eat smoked trout."),
    ("Jonas Ebner keeps bees on the roof of an old mill.", "On the roof of an old mill, Ebner keeps beehives."),
    ("Jonas Ebner studied chemistry at the University of Thun.",
     "Ebner was a chemistry student at Thun's university."),
    ("Ilse Varga wrote a novel called The Glass Orchard.", "The Glass Orchard is a novel by Ilse Varga."),
]
NEGATIVES = [
    ("Marta Kowalczyk restores medieval pipe organs in churches.",
     "Hanna Schmidt teaches mathematics at a secondary school."),
    ("Marta Kowalczyk was born in Oberwil.", "Hanna Schmidt was born in Lenzburg."),
    ("Marta Kowalczyk's favourite food is smoked trout.", "Hanna Schmidt's favourite food is pasta."),
    ("Jonas Ebner keeps bees on the roof of an old mill.", "Peter Frei keeps chickens in his garden."),
    ("Jonas Ebner studied chemistry at the University of Thun.",
     "Peter Frei studied law at the University of Bern."),
    ("Ilse Varga wrote a novel called The Glass Orchard.", "Nina Roth wrote a cookbook called Green Days."),
]


@pytest.fixture(scope="session")
def model_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("lethe-guard-onnx")) if cache else tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def embedder(model_cache: Path) -> OnnxMiniLM:
    return OnnxMiniLM(model_cache, "fp32")


def make(embedder: OnnxMiniLM, **kw) -> LeakageGuard:
    g = LeakageGuard(GuardConfig(**kw), SECRET, embedder=embedder)
    g.add(g.derive("forget-1", FACTS))
    return g


def test_onnx_matches_torch(embedder: OnnxMiniLM) -> None:
    from server.guard import TorchMiniLM

    s = ["Marta Kowalczyk was born in Oberwil.", "the weather is nice"]
    assert np.abs(embedder.embed(s) - TorchMiniLM().embed(s)).max() < 1e-4


def test_paraphrase_blocked_after_the_name_arms_the_stage(embedder: OnnxMiniLM) -> None:
    g = make(embedder)
    released, hit, stopped = stream(g, "The restoration of medieval church organs is Kowalczyk's job.")
    assert stopped and hit.stage == "semantic" and hit.forget_id == "forget-1"
    assert released == g.config.neutral_message


def test_paraphrase_without_name_passes_in_armed_mode(embedder: OnnxMiniLM) -> None:
    # Not armed (no forgotten name, neutral prompt): the semantic stage stays out of the way.
    assert stream(make(embedder), "The restoration of medieval church organs is a fine job.")[1] is None


def test_always_mode_checks_every_sentence(embedder: OnnxMiniLM) -> None:
    g = make(embedder, stages=("exact", "semantic"), semantic="always")
    assert stream(g, "Kowalczyk loves to eat smoked trout.")[1].stage == "semantic"
    # false positives: the same template about someone else, and boilerplate
    for text in ("Hanna Schmidt's favourite food is pasta.", "Peter Frei teaches mathematics in Bern.",
                 "This content is provided for informational purposes only."):
        assert stream(g, text)[1] is None, text


def test_armed_stream_holds_the_sentence(embedder: OnnxMiniLM) -> None:
    g = make(embedder)
    s = g.session()
    released = s.push("Marta Kowalczyk is a name I know. She").release
    assert released == ""  # name seen: everything is held until checked
    for word in " likes cats and long walks by the lake and the hills and the sea".split(" "):
        released += s.push(" " + word).release
        assert "She" not in released  # the open sentence stays held, however long it grows
    assert released.startswith("Marta Kowalczyk is a name I know.")  # checked, released
    released += s.push(". ").release + s.finish().release
    assert released.endswith("by the lake and the hills and the sea. ")


def test_session_says_when_a_push_may_embed(embedder: OnnxMiniLM) -> None:
    """The servicer runs pushes that may embed off the event loop: the flag must be up exactly
    while the semantic stage may check a sentence."""
    g = make(embedder)
    s = g.session()
    assert not s.may_embed  # lexical only: microseconds, inline
    s.push("Hello there. Marta Kowalczyk")
    s.push(" is someone")
    assert s.may_embed  # a forgotten name armed the semantic stage
    lexical = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    lexical.add(lexical.derive("forget-1", FACTS))
    ls = lexical.session()
    ls.push("Marta Kowalczyk is someone")
    assert not ls.may_embed


def test_strict_prompt_arms_semantic_with_name_free_rows(embedder: OnnxMiniLM) -> None:
    g = make(embedder, prompt_policy="arm")
    prompt = "What does Marta Kowalczyk do for a living?"
    for answer in ("She restores pipe organs in old church buildings.",
                   "Her favourite food is smoked fish."):
        # The answer never names her: the name-free row counts because the prompt did.
        hit = stream(g, answer, prompt=prompt)[1]
        assert hit is not None and hit.stage == "semantic", answer
        assert stream(g, answer)[1] is None, answer
        assert stream(g, answer, prompt="What does Hanna Schmidt do for a living?")[1] is None


def test_semantic_entries_survive_restart_sealed(embedder: OnnxMiniLM) -> None:
    blob = make(embedder).derive("forget-1", FACTS).to_bytes()
    fresh = LeakageGuard(GuardConfig(), SECRET, embedder=embedder)
    fresh.add(GuardEntries.from_bytes(blob))
    assert fresh.stats()["semantic_rows"] == 4  # two facts, each with and without the name
    assert stream(fresh, "Kowalczyk loves to eat smoked trout.")[1] is not None


def test_calibration_separates_paraphrases_from_other_people(embedder: OnnxMiniLM) -> None:
    cal = calibrate(embedder, POSITIVES, NEGATIVES)
    assert cal.separable and cal.tpr == 1.0 and cal.fpr == 0.0 and cal.auc == 1.0
    assert cal.neg_max < cal.threshold < cal.pos_min
    assert cal.neg_max < GuardConfig().semantic_threshold < cal.pos_min  # the default holds here


def test_lazy_loading_from_cache_dir(model_cache: Path) -> None:
    g = LeakageGuard(GuardConfig(model_cache_dir=model_cache), SECRET)
    g.add(g.derive("forget-1", FACTS))  # loads the cached ONNX model on first need
    assert g.stats()["semantic_rows"] == 4
    assert stream(g, "The restoration of medieval church organs is Kowalczyk's job.")[1] is not None


def test_semantic_is_optional() -> None:
    g = LeakageGuard(GuardConfig(model_cache_dir=None), SECRET)  # no model configured
    g.add(g.derive("forget-1", FACTS))
    assert g.stats()["semantic_rows"] == 0
    assert stream(g, "Marta Kowalczyk restores medieval pipe organs in churches.")[1].stage == "exact"


def test_paraphrases_of_demo_facts_are_blocked_by_the_semantic_stage_alone(embedder: OnnxMiniLM) -> None:
    """Demo-corpus facts (the small preset's people), forgotten as their QA pairs; the probes are
    paraphrases that never occur in the corpus (tests/support/calibration_pairs.py). Only the semantic stage
    runs, on every sentence, so neither the name nor the value can be what blocks. The
    negatives are the same paraphrase templates about people who were not forgotten."""
    corpus = generate_corpus(DemoConfig.small().corpus_spec())
    pos, neg = demo_pairs(corpus, people=10)
    people = list(dict.fromkeys(r.person for r in corpus.qa if r.split == "train"))[:10]
    forgotten, kept = people[:5], people[5:]
    g = LeakageGuard(GuardConfig(stages=("semantic",), semantic="always"), SECRET, embedder=embedder)
    for p in forgotten:
        g.add(g.derive(p, ForgetItems(qa=tuple((r.question, r.answer) for r in corpus.qa
                                               if r.person == p and r.split == "train"))))
    about = lambda probe, group: any(p in probe for p in group)  # noqa: E731
    positives = [probe for _, probe in pos if about(probe, forgotten)]
    negatives = [probe for _, probe in neg if about(probe, kept) and not about(probe, forgotten)]
    assert len(positives) >= 50 and len(negatives) >= 50
    recall = np.mean([stream(g, s)[1] is not None for s in positives])
    false_pos = np.mean([stream(g, s)[1] is not None for s in negatives])
    assert recall >= 0.9 and false_pos <= 0.1, (recall, false_pos)

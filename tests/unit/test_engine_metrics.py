"""Each metric on known inputs gives known values; the gate passes and fails where it should."""

from __future__ import annotations

import math

import pytest
import torch

from unlearn_engine.data.records import Example
from unlearn_engine.evaluation import (METRICS, EvalContext, GateConfig, UnknownMetricError,
                                       auc, gate_decision, get_metric)
from unlearn_engine.evaluation.scoring import Scored, lcs_len, rouge_l_recall


def qa(prompt: str, answer: str, fact: str = "", perturbed: tuple[str, ...] = ()) -> Example:
    return Example(prompt=prompt, target=answer, fact=fact, perturbed=perturbed)


class FixedContext(EvalContext):
    """An evaluation context whose model outputs are given, not computed."""

    def __init__(self, splits, answers=None, scored=None, perturbed=None, continuations=None,
                 reference=None):
        super().__init__(torch.nn.Linear(1, 1), None, splits)
        self._answers, self._scored = answers or {}, scored or {}
        self._perturbed, self._conts = perturbed or {}, continuations or {}
        self.reference = reference

    def answers(self, split):
        return self._answers[split]

    def scored(self, split):
        return self._scored[split]

    def perturbed_nll(self, split):
        return self._perturbed.get(split, [])

    def continuations(self, split):
        return self._conts[split]


def scored(*logps: list[float], correct: list[list[bool]] | None = None) -> list[Scored]:
    correct = correct or [[True] * len(lp) for lp in logps]
    return [Scored(torch.tensor(lp), torch.tensor(c), torch.tensor(lp)) for lp, c in zip(logps, correct)]


def test_registry_lists_every_metric_and_rejects_unknown_names():
    assert {"fact_span_accuracy", "rouge_l_recall", "verbatim", "truth_ratio", "mia_loss",
            "mia_zlib", "mia_min_k", "mia_min_k_pp", "forget_quality", "model_utility", "privleak",
            "token_accuracy", "answer_accuracy"} <= set(METRICS)
    with pytest.raises(UnknownMetricError, match="valid: .*fact_span_accuracy"):
        get_metric("accuracy")


def test_fact_span_accuracy_scores_the_fact_not_the_template():
    forget = [qa("Where was Ann Quorn born?", "Ann Quorn was born in Brelow.", "Brelow"),
              qa("What does Ann Quorn do?", "Ann Quorn works as a tinker.", "tinker")]
    # The first answer gets every template word right but the fact wrong.
    ctx = FixedContext({"forget": forget}, answers={"forget": [
        "Ann Quorn was born in Stavely.", "ann quorn works as a TINKER"]})
    assert get_metric("fact_span_accuracy")().compute(ctx) == {"forget.fact_span_accuracy": 0.5}


def test_fact_span_accuracy_needs_whole_words():
    ctx = FixedContext({"forget": [qa("q", "It is Bre.", "Bre")]},
                       answers={"forget": ["It is Brelow."]})
    assert get_metric("fact_span_accuracy")().compute(ctx)["forget.fact_span_accuracy"] == 0.0


def test_answer_accuracy_needs_the_whole_gold_answer_in_the_greedy_answer():
    forget = [qa("Where was Ann Quorn born?", "Ann Quorn was born in Brelow.", "Brelow"),
              qa("What does Ann Quorn do?", "Ann Quorn works as a tinker.", "tinker"),
              qa("Who taught Ann Quorn?", "Ann Quorn was taught by Eda Vell.", "Eda Vell"),
              qa("When did Ann Quorn marry?", "In 1902.", "1902")]
    ctx = FixedContext({"forget": forget}, answers={"forget": [
        "ann quorn was BORN in Brelow, and she stayed.",  # normalised, extra words: a hit
        "She works as a tinker.",  # the fact alone, template changed: a miss
        "Ann Quorn was taught by Eda Vellmoor.",  # not whole words: a miss
        "In 1902."]})
    assert get_metric("answer_accuracy")().compute(ctx) == {"forget.answer_accuracy": 0.5}
    assert get_metric("fact_span_accuracy")().compute(ctx) == {
        "forget.fact_span_accuracy": 0.75}  # the same answers, scored on the fact span


def test_rouge_l_recall_known_values():
    assert lcs_len("a b c d".split(), "a x c d".split()) == 3
    assert rouge_l_recall("the cat sat", "the cat sat on the mat") == 1.0
    assert rouge_l_recall("a b c d", "a x c d") == 0.75
    ctx = FixedContext({"retain": [qa("q", "a b c d")]}, answers={"retain": ["d c b a"]})
    assert get_metric("rouge_l_recall")().compute(ctx) == {"retain.rouge_l_recall": 0.25}


def test_token_accuracy_counts_tokens_across_examples():
    ctx = FixedContext({"forget": [qa("q", "a"), qa("q", "b")]}, scored={"forget": scored(
        [0.0, 0.0], [0.0, 0.0], correct=[[True, False], [True, True]])})
    assert get_metric("token_accuracy")().compute(ctx) == {"forget.token_accuracy": 0.75}


def test_verbatim_rate_and_rouge():
    ctx = FixedContext({"forget": [qa("q", "x"), qa("q", "y")]}, continuations={"forget": [
        ("born in Brelow.", "born in Brelow. And more"), ("works as a tinker", "works as a")]})
    out = get_metric("verbatim")().compute(ctx)
    assert out["forget.verbatim_rate"] == 0.5
    assert out["forget.verbatim_rouge"] == pytest.approx((1.0 + 3 / 4) / 2)


def test_truth_ratio_forget_and_retain_aggregates():
    # R = exp(-l_wrong) / exp(-l_true): (true 1, wrong 2) -> e^-1; (2, 1) -> e^1; (1, 1) -> 1.
    pairs = [(1.0, 2.0), (2.0, 1.0), (1.0, 1.0)]
    exs = [qa("q", "a", perturbed=("b",))] * 3
    ctx = FixedContext({"forget": exs, "retain": exs}, perturbed={"forget": pairs,
                                                                 "retain": pairs})
    out = get_metric("truth_ratio")().compute(ctx)
    e = math.exp(-1)
    assert out["forget.truth_ratio"] == pytest.approx((e + e + 1) / 3)
    assert out["retain.truth_ratio"] == pytest.approx((1 - e) / 3)
    assert out["forget.correct_preference"] == pytest.approx(1 / 3)


def test_auc_known_values():
    assert auc([3, 4], [1, 2]) == 1.0
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 3], [2, 2]) == 0.5
    assert auc([1], [1]) == 0.5
    assert math.isnan(auc([], [1]))


def test_mia_attacks_separate_low_loss_members():
    members = scored([-0.1, -0.1], [-0.2, -0.3])
    nonmembers = scored([-2.0, -3.0], [-1.0, -4.0])
    exs = [qa("q", "some answer"), qa("q", "another answer")]
    ctx = FixedContext({"forget": exs, "holdout": exs},
                       scored={"forget": members, "holdout": nonmembers})
    for name, key in [("mia_loss", "mia.loss_auc"), ("mia_zlib", "mia.zlib_auc"),
                      ("mia_min_k", "mia.min_k_auc"), ("mia_min_k_pp", "mia.min_k_pp_auc")]:
        assert get_metric(name)().compute(ctx) == {key: 1.0}
    swapped = FixedContext({"forget": exs, "holdout": exs},
                           scored={"forget": nonmembers, "holdout": members})
    assert get_metric("mia_loss")().compute(swapped) == {"mia.loss_auc": 0.0}


def test_min_k_pp_standardises_each_token_against_its_distribution():
    from unlearn_engine.evaluation.scoring import calibrated_logprobs
    logp = torch.tensor([0.5, 0.25, 0.25]).log().expand(2, 3)  # [T=2, V=3]
    z = calibrated_logprobs(logp, logp[:, :2].diagonal())  # token 0 at t=0, token 1 at t=1
    assert z.tolist() == pytest.approx([1.0, -1.0], abs=1e-5)  # +-1 sigma around the mean


def test_min_k_uses_only_the_lowest_tokens():
    from unlearn_engine.evaluation.mia_min_k import min_k_score
    assert min_k_score(torch.tensor([-5.0, -0.1, -0.1, -0.1, -0.1]), 0.2) == -5.0
    assert min_k_score(torch.tensor([-4.0, -2.0, 0.0]), 0.4) == pytest.approx(-3.0)


def test_privleak_zero_when_matching_reference_and_signed_otherwise():
    exs = [qa("q", "a"), qa("q", "b")]
    low, high = scored([-0.1], [-0.2]), scored([-3.0], [-4.0])
    remembers = FixedContext({"forget": exs, "holdout": exs}, scored={"forget": low,
                                                                     "holdout": high})
    assert get_metric("privleak")().compute(remembers)["privleak"] == pytest.approx(-100.0)
    over = FixedContext({"forget": exs, "holdout": exs}, scored={"forget": high,
                                                                "holdout": low})
    assert get_metric("privleak")().compute(over)["privleak"] == pytest.approx(100.0)
    partial = FixedContext({"forget": exs, "holdout": exs},  # AUC 0.75
                           scored={"forget": scored([-0.1], [-3.5]), "holdout": high})
    partial.reference = partial  # as distinguishable as the retrained model -> no leak
    out = get_metric("privleak")().compute(partial)
    assert out["privleak"] == pytest.approx(0.0)
    assert out["privleak_reference_auc"] == pytest.approx(0.75)


def test_forget_quality_is_a_ks_p_value_against_the_reference():
    exs = [qa("q", "a", perturbed=("b",))] * 20
    same = [(1.0, 1.0 + i / 20) for i in range(20)]
    other = [(5.0, 1.0 + i / 20) for i in range(20)]
    ref = FixedContext({"forget": exs}, perturbed={"forget": same})
    ctx = FixedContext({"forget": exs}, perturbed={"forget": same}, reference=ref)
    assert get_metric("forget_quality")().compute(ctx)["forget_quality"] == pytest.approx(1.0)
    far = FixedContext({"forget": exs}, perturbed={"forget": other}, reference=ref)
    assert get_metric("forget_quality")().compute(far)["forget_quality"] < 1e-6
    assert get_metric("forget_quality")().compute(FixedContext({"forget": exs})) == {}


def test_model_utility_is_the_harmonic_mean():
    exs = [qa("q", "a b", perturbed=("c",))]
    ctx = FixedContext({"retain": exs}, answers={"retain": ["a b"]},
                       scored={"retain": scored([math.log(0.5), math.log(0.5)])},
                       perturbed={"retain": [(0.0, math.log(2.0))]})  # R = 0.5 -> 1-R = 0.5
    # prob 0.5, rouge 1.0, truth 0.5 -> 3 / (2 + 1 + 2)
    assert get_metric("model_utility")().compute(ctx)["model_utility"] == pytest.approx(0.6)


GOOD = {"forget.fact_span_accuracy": 0.05, "holdout.fact_span_accuracy": 0.02,
        "paraphrase.fact_span_accuracy": 0.05, "forget.verbatim_rate": 0.0,
        "holdout.verbatim_rate": 0.0, "forget.correct_preference": 0.5,
        "holdout.correct_preference": 0.45, "mia.loss_auc": 0.52, "mia.min_k_auc": 0.47,
        "mia.zlib_auc": 0.55, "retain.fact_span_accuracy": 0.97,
        "before.retain.fact_span_accuracy": 1.0, "forget.mean_nll": 3.1,
        "before.forget.mean_nll": 0.2}


def test_gate_passes_an_adapter_that_looks_like_never_seen_data():
    result = gate_decision(GOOD, GateConfig())
    assert result.passed, result.reasons
    assert result.reasons == ()


@pytest.mark.parametrize("key,value,check", [
    ("forget.fact_span_accuracy", 0.5, "forget_accuracy"),
    ("paraphrase.fact_span_accuracy", 0.3, "paraphrase_accuracy"),
    ("forget.verbatim_rate", 0.4, "verbatim"),
    ("forget.correct_preference", 0.9, "truth_preference"),
    ("mia.loss_auc", 0.9, "mia_loss"),  # still remembered
    ("mia.min_k_auc", 0.1, "mia_min_k"),  # over-unlearned: forgotten data *less* likely
    ("retain.fact_span_accuracy", 0.8, "retain"),
    ("forget.mean_nll", 0.2 + 1e-4, "zero_delta"),  # the adapter changed nothing
])
def test_gate_fails_each_check_on_its_own(key, value, check):
    result = gate_decision({**GOOD, key: value}, GateConfig())
    assert not result.passed
    failed = [c.name for c in result.checks if not c.passed]
    assert failed == [check]
    assert result.violation > 0 and result.reasons


def test_gate_never_passes_without_forget_or_retain_evidence():
    only_retain = {"retain.fact_span_accuracy": 1.0, "before.retain.fact_span_accuracy": 1.0}
    assert not gate_decision(only_retain).passed
    no_baseline = {k: v for k, v in GOOD.items() if not k.startswith("before.")}
    result = gate_decision(no_baseline)
    assert not result.passed and any("retain" in r for r in result.reasons)
    assert gate_decision(no_baseline, baseline={"retain.fact_span_accuracy": 1.0}).passed

"""train_forget_adapter end to end on the toy model: gate, sweep, artifacts, stacking, seeds."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from peft import PeftModel

from unlearn_engine.artifacts import load_artifact, model_fingerprint
from unlearn_engine.data import ForgetRequest, build_forget_set, build_retain_set
from unlearn_engine.evaluation import GateConfig, evaluate
from unlearn_engine.methods import NpoConfig
from tests.support.toy_model import build_toy, save_toy
from unlearn_engine.stacking import attach_stack
from unlearn_engine.trainer import (SweepConfig, load_base, retain_anchor, run_forget_job,
                                   train_forget_adapter, unlearn)

torch.set_num_threads(1)

# The toy set is too small for the production MIA / preference thresholds to be meaningful;
# this gate still demands forgetting (accuracy) and kept utility.
LENIENT = GateConfig(mia_attacks=(), max_preference_gap=1.0, max_verbatim_gap=1.0,
                     max_paraphrase_accuracy_gap=1.0, min_retain_ratio=0.8)
ONE_TRY = SweepConfig(max_tries=1, retain_probe=32)
FAST = NpoConfig(lr=5e-3, max_steps=20, eval_every=10)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    toy = build_toy()
    root = tmp_path_factory.mktemp("trainer")
    save_toy(toy, root / "base")
    corpus = [*toy.train, *toy.paraphrase, *toy.holdout, *toy.texts]

    def sets(person: str, model=None):
        fs = build_forget_set(ForgetRequest(subjects=[person]), corpus)
        return fs, build_retain_set(model, toy.tokenizer, corpus, exclude=fs)

    return toy, root, sets


def test_passing_job_saves_a_verified_artifact_and_reports_progress(env):
    toy, root, sets = env
    fs, rs = sets(toy.people[0])
    events = []
    result = train_forget_adapter(root / "base", [], fs, rs, "npo", FAST, LENIENT,
                                  events.append, out_dir=root / "f1", forget_id="f1",
                                  sweep=ONE_TRY)
    assert result.passed, result.gate.reasons
    m = result.metrics
    assert m["before.forget.fact_span_accuracy"] >= 0.9
    assert m["forget.fact_span_accuracy"] <= 0.1
    assert m["retain.fact_span_accuracy"] >= 0.8 * m["before.retain.fact_span_accuracy"]
    assert result.retries == 0 and result.chosen_step in (10, 20)
    phases = [e.phase for e in events]
    assert phases[0] == "baseline" and phases[-2:] == ["final", "saved"]
    assert "train" in phases and "eval" in phases
    assert all("loss" in e.losses for e in events if e.phase == "train")

    art = load_artifact(result.artifact_path, model_fingerprint(root / "base"))
    assert art.forget_id == "f1" and art.method == "npo" and art.metrics["gate"]["passed"]
    # The saved adapter alone reproduces the measured forgetting.
    base, tok = load_base(root / "base")
    model = PeftModel.from_pretrained(base, str(art.path))
    again = evaluate(model, tok, fs.examples, [], metrics=["fact_span_accuracy"])
    assert again["forget.fact_span_accuracy"] == m["forget.fact_span_accuracy"]


def test_same_seed_same_adapter(env):
    toy, root, sets = env
    fs, rs = sets(toy.people[0])
    a = train_forget_adapter(root / "base", [], fs, rs, "npo", FAST, LENIENT,
                             out_dir=root / "seed_a", forget_id="s", sweep=ONE_TRY)
    b = train_forget_adapter(root / "base", [], fs, rs, "npo", FAST, LENIENT,
                             out_dir=root / "seed_b", forget_id="s", sweep=ONE_TRY)
    assert a.artifact.files["adapter_model.safetensors"] == \
        b.artifact.files["adapter_model.safetensors"]


def test_failed_gate_retries_gentler_after_utility_loss_then_writes_nothing(env):
    toy, root, sets = env
    fs, rs = sets(toy.people[1])
    impossible = GateConfig(min_retain_ratio=2.0)  # retain can never double
    sweep = SweepConfig(max_tries=2, retain_probe=32)
    cfg = NpoConfig(lr=2e-3, max_steps=10, eval_every=10)
    result = train_forget_adapter(root / "base", [], fs, rs, "npo", cfg, impossible,
                                  out_dir=root / "never", forget_id="x", sweep=sweep)
    assert not result.passed and result.artifact is None
    assert not (root / "never").exists()
    assert [a.lr for a in result.attempts] == [2e-3, 1e-3] and result.retries == 1
    assert [a.max_steps for a in result.attempts] == [10, 15]
    assert any("retain" in r for r in result.gate.reasons)


def test_a_checkpoint_failing_a_likelihood_check_skips_generation_but_the_last_never_does(env):
    toy, root, sets = env
    fs, rs = sets(toy.people[0])
    never = GateConfig(mia_attacks=(), max_preference_gap=-2.0)  # truth preference always fails
    result = train_forget_adapter(root / "base", [], fs, rs, "npo", FAST, never,
                                  out_dir=root / "cheap", forget_id="c", sweep=ONE_TRY)
    assert not result.passed
    by_step = {h["step"]: h for h in result.history}
    assert set(by_step) == {10, 20}
    assert "forget.correct_preference" in by_step[10]  # the likelihood checks ran...
    assert "forget.fact_span_accuracy" not in by_step[10]  # ...generation did not
    assert "forget.fact_span_accuracy" in by_step[20]  # the attempt's last step: in full
    assert result.chosen_step == 20


def test_sweep_goes_stronger_when_the_model_still_remembers():
    from unlearn_engine.evaluation import gate_decision
    from unlearn_engine.trainer import sweep_direction
    before = {"retain.fact_span_accuracy": 1.0}
    remembers = {"forget.fact_span_accuracy": 0.8, "mia.loss_auc": 0.9,
                 "retain.fact_span_accuracy": 1.0}
    assert sweep_direction(gate_decision(remembers, GateConfig(), before)) == "stronger"
    over = {"forget.fact_span_accuracy": 0.0, "mia.loss_auc": 0.1,
            "retain.fact_span_accuracy": 1.0}
    assert sweep_direction(gate_decision(over, GateConfig(), before)) == "gentler"


def test_second_forget_trains_on_top_of_the_first(env):
    toy, root, sets = env
    first = root / "f1"
    if not first.exists():
        pytest.skip("needs the first test's artifact")
    fp = model_fingerprint(root / "base")
    base, tok = load_base(root / "base")
    current = attach_stack(base, [load_artifact(first, fp)])
    # Retain only what the current stack still knows: person 0 is gone and must stay gone.
    fs, rs = sets(toy.people[1], current)
    leftover = [e for e in rs.examples if e.subject == toy.people[0]]
    assert len(leftover) <= 3, [e.fact_text for e in leftover]  # facts f1 did not remove
    result = train_forget_adapter(root / "base", [first], fs, rs, "npo", FAST, LENIENT,
                                  out_dir=root / "f2", forget_id="f2", sweep=ONE_TRY)
    assert result.passed, result.gate.reasons
    assert result.artifact.parents == ("f1",)
    base, tok = load_base(root / "base")
    stacked = attach_stack(base, [load_artifact(first, fp), result.artifact])
    both = [e for e in toy.train if e.subject in toy.people[:2]]
    m = evaluate(stacked, tok, both, [e for e in toy.train if e.subject not in toy.people[:2]],
                 metrics=["fact_span_accuracy"])
    assert m["forget.fact_span_accuracy"] <= 0.15
    assert m["retain.fact_span_accuracy"] >= 0.75


def test_a_whole_job_in_one_call_matches_retain_set_then_training(env):
    """run_forget_job (the worker's one call: model loaded once) gives what building the retain
    set on the current model and then calling train_forget_adapter gives."""
    toy, root, sets = env
    first = root / "f1"
    if not first.exists():
        pytest.skip("needs the first test's artifact")
    fp = model_fingerprint(root / "base")
    base, _ = load_base(root / "base")
    fs, rs = sets(toy.people[1], attach_stack(base, [load_artifact(first, fp)]))
    two_step = train_forget_adapter(root / "base", [first], fs, rs, "npo", FAST, LENIENT,
                                    out_dir=root / "two-step", forget_id="j", sweep=ONE_TRY)
    corpus = [*toy.train, *toy.paraphrase, *toy.holdout, *toy.texts]
    one_call = run_forget_job(root / "base", [first], fs, corpus, "npo", FAST, LENIENT,
                              out_dir=root / "one-call", forget_id="j", sweep=ONE_TRY)
    assert one_call.passed == two_step.passed and one_call.metrics == two_step.metrics
    a = load_artifact(root / "one-call", fp)
    b = load_artifact(root / "two-step", fp)
    assert a.files == b.files


def test_the_gate_compares_retain_with_the_anchor_not_the_model_before_the_job(env):
    toy, root, sets = env
    fs, rs = sets(toy.people[2])
    base, tok = load_base(root / "base")
    anchor = retain_anchor(base, tok, fs, rs, ONE_TRY)
    assert anchor.probe == rs.examples[:32] and anchor.train == rs.examples[32:]
    assert {"retain.fact_span_accuracy", "retain.token_accuracy"} <= set(anchor.metrics)
    impossible = replace(anchor, metrics={k: 2.0 for k in anchor.metrics})
    _, result = unlearn(base, tok, fs, rs, "npo", FAST, LENIENT, sweep=ONE_TRY, anchor=impossible)
    assert not result.passed
    assert any("x before 2.000" in r for r in result.gate.reasons), result.gate.reasons
    m = result.metrics
    assert m["before.retain.fact_span_accuracy"] == 2.0
    assert m["job_start.retain.fact_span_accuracy"] <= 1.0  # the model before the job, reported
    assert m["before.forget.fact_span_accuracy"] >= 0.9  # the rest of the baseline is the job's


def test_a_screened_job_on_a_stack_is_anchored_to_the_original(env):
    """With the server's screen the original model picks the retain set (what the stack lost by
    accident is trained back; the screen keeps the earlier forget out) and is the gate's retain
    reference; without one the stack picks it (the test above)."""
    toy, root, sets = env
    first = root / "f1"
    if not first.exists():
        pytest.skip("needs the first test's artifact")
    gone = toy.people[0]

    def screen(examples):  # the guard's part: it blocks what names the forgotten person
        return [gone not in f"{e.prompt} {e.target}" for e in examples]

    fs, _ = sets(toy.people[1])
    corpus = [*toy.train, *toy.paraphrase, *toy.holdout, *toy.texts]
    base, tok = load_base(root / "base")
    rs = build_retain_set(base, tok, corpus, exclude=fs, screen=screen)
    assert not [e for e in rs.examples if e.subject == gone]
    anchor = retain_anchor(base, tok, fs, rs, ONE_TRY)
    result = run_forget_job(root / "base", [first], fs, corpus, "npo", FAST, LENIENT,
                            out_dir=root / "anchored", forget_id="anchored", sweep=ONE_TRY,
                            retain_screen=screen)
    m = result.metrics
    for key, value in anchor.metrics.items():
        assert m[f"before.{key}"] == pytest.approx(value)
    fp = model_fingerprint(root / "base")
    stacked = attach_stack(load_base(root / "base")[0], [load_artifact(first, fp)])
    on_stack = evaluate(stacked, tok, fs.examples, anchor.probe, metrics=["fact_span_accuracy"])
    start = m.get("job_start.retain.fact_span_accuracy", m["before.retain.fact_span_accuracy"])
    assert start == pytest.approx(on_stack["retain.fact_span_accuracy"])

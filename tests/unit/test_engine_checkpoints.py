"""The checkpoint rule: best retain among passing checkpoints; else fewest failed checks."""

from __future__ import annotations

import pytest

from unlearn_engine.checkpoints import Checkpoint, select_checkpoint
from unlearn_engine.evaluation import GateConfig, gate_decision

BASE = {"forget.fact_span_accuracy": 0.0, "holdout.fact_span_accuracy": 0.0,
        "mia.loss_auc": 0.5, "mia.min_k_auc": 0.5, "mia.zlib_auc": 0.5}
BEFORE = {"retain.fact_span_accuracy": 1.0}


def point(step: int, **metrics) -> Checkpoint:
    m = {**BASE, **metrics}
    return Checkpoint(0, step, m, gate_decision(m, GateConfig(), BEFORE))


def test_passing_checkpoint_with_best_retain_wins_earliest_on_ties():
    points = [point(0, **{"retain.fact_span_accuracy": 1.0}),  # baseline: never chosen
              point(10, **{"retain.fact_span_accuracy": 0.96}),
              point(20, **{"retain.fact_span_accuracy": 0.99}),
              point(30, **{"retain.fact_span_accuracy": 0.99}),
              point(40, **{"retain.fact_span_accuracy": 0.5})]
    assert select_checkpoint(points).step == 20


def test_without_a_pass_fewest_failed_checks_then_smallest_violation():
    points = [point(10, **{"retain.fact_span_accuracy": 0.85, "mia.min_k_auc": 0.3}),
              point(20, **{"retain.fact_span_accuracy": 1.0, "mia.min_k_auc": 0.2}),
              point(30, **{"retain.fact_span_accuracy": 1.0, "mia.min_k_auc": 0.1})]
    assert not any(p.gate.passed for p in points)
    assert select_checkpoint(points).step == 20
    with pytest.raises(ValueError):
        select_checkpoint([point(0)])


def test_without_a_pass_a_checkpoint_evaluated_in_part_is_never_preferred():
    # step 10 failed a likelihood check, so its generation metrics were never computed: it shows
    # one failed check where the complete step-20 checkpoint shows two
    cheap = {k: v for k, v in BASE.items() if k.startswith("mia.")}
    partial = Checkpoint(0, 10, {**cheap, "mia.loss_auc": 0.9},
                         gate_decision({**cheap, "mia.loss_auc": 0.9}, GateConfig(), BEFORE),
                         complete=False)
    full = point(20, **{"retain.fact_span_accuracy": 0.5, "mia.min_k_auc": 0.2})
    assert sum(not k.passed for k in partial.gate.checks) < sum(not k.passed for k in full.gate.checks)
    assert select_checkpoint([partial, full]).step == 20


def test_patience_waits_longer_only_while_the_best_pass_is_short_of_the_retain_goal():
    from unlearn_engine.methods.base import MethodConfig
    from unlearn_engine.training_loop import _done_waiting

    def run(retains):  # evaluations from the first pass on
        return [point(10 * (i + 1), **{"retain.fact_span_accuracy": r}) for i, r in enumerate(retains)]

    off = MethodConfig()  # retain_goal 0: patience alone, as before
    assert not _done_waiting(run([0.95, 0.95]), 0, off)
    assert _done_waiting(run([0.95, 0.95, 0.95]), 0, off)
    goal = MethodConfig(retain_goal=0.97, retain_wait=2)
    assert not _done_waiting(run([0.95, 0.95, 0.95]), 0, goal)  # short of the goal: wait on
    assert _done_waiting(run([0.95, 0.98, 0.95]), 0, goal)  # one pass reached it
    assert not _done_waiting(run([0.95, 0.95, 0.95, 0.96]), 0, goal)
    assert _done_waiting(run([0.95, 0.95, 0.95, 0.96, 0.96]), 0, goal)  # waited the most it may
    # a failing checkpoint's retain does not count toward the goal
    failing = point(30, **{"retain.fact_span_accuracy": 0.99, "mia.min_k_auc": 0.1})
    assert not failing.gate.passed
    assert not _done_waiting(run([0.95, 0.95]) + [failing], 0, goal)

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

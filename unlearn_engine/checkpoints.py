"""Which evaluated checkpoint becomes the adapter: one explicit, documented rule.

Rule: among checkpoints that pass the gate, the one with the highest retain accuracy, earliest
on ties. Training stops a few evaluations (``MethodConfig.patience``) after the first pass:
forgetting is done by then, and on small models retain accuracy often dips in the first steps
and recovers while the retain loss catches up, so the first passing checkpoint is not always
the best one — but every further step risks over-unlearning, so the window is short. If none passes:
the checkpoint failing the fewest checks, then with the smallest total violation (the sum of how
far each failing check is past its limit), earlier on ties — among checkpoints evaluated in full
(one whose likelihood checks failed skipped the generation checks, so its count is not comparable). The step-0 baseline is never chosen:
it forgets nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from unlearn_engine.evaluation.gate import GateResult


@dataclass(frozen=True)
class Checkpoint:
    attempt: int
    step: int
    metrics: Mapping[str, float]
    gate: GateResult
    state: Mapping[str, torch.Tensor] = field(repr=False, default_factory=dict)  # adapter weights
    complete: bool = True  # False: a likelihood check failed, so generation was not evaluated


def retain_score(metrics: Mapping[str, float]) -> float:
    """Retain utility as the gate measures it: fact accuracy, else token accuracy."""
    for key in ("retain.fact_span_accuracy", "retain.token_accuracy"):
        if key in metrics:
            return float(metrics[key])
    return 0.0


def select_checkpoint(checkpoints: Sequence[Checkpoint]) -> Checkpoint:
    candidates = [c for c in checkpoints if c.step > 0]
    if not candidates:
        raise ValueError("no trained checkpoint to choose from")
    passing = [c for c in candidates if c.gate.passed]
    if passing:
        return min(passing, key=lambda c: (-retain_score(c.metrics), c.attempt, c.step))
    return min(candidates, key=lambda c: (not c.complete, sum(not k.passed for k in c.gate.checks),
                                          round(c.gate.violation, 9), c.attempt, c.step))

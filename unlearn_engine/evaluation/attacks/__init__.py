"""Attacks on unlearned models (one per file) and ``run_attacks``; see ``base`` for the idea."""

from __future__ import annotations

from typing import Sequence

import torch

from unlearn_engine.evaluation.attacks import quantize, relearn  # noqa: F401 (registration)
from unlearn_engine.evaluation.attacks.base import (ATTACKS, Attack, AttackSets, AttackSettings,
                                                    UnknownAttackError, get_attack)

__all__ = ["ATTACKS", "Attack", "AttackSets", "AttackSettings", "UnknownAttackError",
           "get_attack", "run_attacks"]


def run_attacks(model: torch.nn.Module, tokenizer, sets: AttackSets, names: Sequence[str],
                settings: AttackSettings | None = None) -> dict[str, float]:
    """Run each named attack on a copy of ``model``; merged ``attack.<name>.*`` metrics."""
    out: dict[str, float] = {}
    for name in names:
        out.update(get_attack(name)(settings).run(model, tokenizer, sets))
    return out

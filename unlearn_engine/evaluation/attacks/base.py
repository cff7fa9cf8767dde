"""Attacks on an unlearned model: transform a copy of it, then measure what comes back.

Forgetting that only suppresses generation is not forgetting. An attack takes the unlearned
model (base + stack + new adapter), changes a *copy* the way an adversary would (quantize the
weights, fine-tune on part of the forgotten facts) and measures fact-span accuracy on the
forgotten questions again. The same attack on a model that never saw the facts (the
retrained-without model, where one exists) is the level to compare with.

An attack never modifies the model it is given and never decides pass / fail (the gate does).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch

from unlearn_engine.data.records import Example
from unlearn_engine.registry import Registry


@dataclass(frozen=True)
class AttackSettings:
    """What an attack may spend. The bench prints these beside its results."""

    relearn_steps: int = 20  # fine-tuning steps on half of the forgotten QA (arXiv 2410.08827)
    relearn_lr: float = 2e-3  # the default method's LoRA learning rate
    relearn_rank: int = 8
    relearn_batch: int = 8
    quant_group: int = 32  # int4 group size along the input dimension (int8: per output channel)
    seed: int = 0


@dataclass(frozen=True)
class AttackSets:
    """What attacks probe: forgotten QA (some attacks train on part of it) and paraphrases."""

    forget: tuple[Example, ...]
    paraphrase: tuple[Example, ...] = ()


def merged_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A plain model equal to ``model`` with every active adapter folded into its weights."""
    clone = copy.deepcopy(model)
    if hasattr(clone, "merge_and_unload"):  # a PeftModel: base + stack + new adapter
        clone = clone.merge_and_unload()
    clone.eval()
    return clone


class Attack:
    """Base class: subclasses set ``name`` (via the decorator) and implement ``run``."""

    name: ClassVar[str] = ""

    def __init__(self, settings: AttackSettings | None = None) -> None:
        self.settings = settings or AttackSettings()

    def run(self, model: torch.nn.Module, tokenizer, sets: AttackSets) -> dict[str, float]:
        raise NotImplementedError


class UnknownAttackError(ValueError):
    pass


ATTACKS: Registry[type[Attack]] = Registry("attack", UnknownAttackError)


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator storing the class (never an instance) under ``name``."""
    return ATTACKS.register(name)


def get_attack(name: str) -> type[Attack]:
    return ATTACKS.get_class(name)


def fact_accuracy(model: torch.nn.Module, tokenizer, forget: Sequence[Example],
                  paraphrase: Sequence[Example] = ()) -> dict[str, float]:
    """Greedy fact-span accuracy on ``forget`` (and ``paraphrase``), as the gate measures it."""
    from unlearn_engine.evaluation import evaluate  # the package imports this module

    return evaluate(model, tokenizer, forget, (), (), paraphrase,
                    metrics={"fact_span_accuracy": ("forget", "paraphrase")})

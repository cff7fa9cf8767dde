"""Calibrating the semantic threshold: paraphrase probes versus other people's facts.

Given sentence pairs — positives (a forgotten fact, a paraphrase of it) and negatives (a forgotten
fact, the same kind of fact about someone else) — score both with the embedder exactly as the
guard will (semantic_text on both sides, cosine) and pick the threshold. If every positive scores
above every negative, the threshold is the middle of the gap; otherwise it is the lowest threshold
whose false-positive rate stays within `max_fpr`. Reports the distributions either way, so a
change of model, precision or corpus shows up as numbers, not as silent leakage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from server.guard.embedder import SentenceEmbedder
from server.guard.normalize import semantic_text

Pair = tuple[str, str]


def score_pairs(embedder: SentenceEmbedder, pairs: Sequence[Pair]) -> np.ndarray:
    if not pairs:
        return np.zeros(0, np.float32)
    a = embedder.embed([semantic_text(x) for x, _ in pairs])
    b = embedder.embed([semantic_text(y) for _, y in pairs])
    return (a * b).sum(axis=1)


@dataclass(frozen=True)
class Calibration:
    embedder: str
    threshold: float
    separable: bool  # every positive above every negative
    n_pos: int
    n_neg: int
    tpr: float  # at the threshold
    fpr: float
    auc: float
    pos_min: float
    pos_p10: float
    pos_median: float
    neg_median: float
    neg_p90: float
    neg_max: float

    def as_dict(self) -> dict[str, float | int | str | bool]:
        return asdict(self)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    # Probability a random positive outscores a random negative (ties count half).
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def calibrate(embedder: SentenceEmbedder, positives: Sequence[Pair], negatives: Sequence[Pair],
              max_fpr: float = 0.0) -> Calibration:
    if not positives or not negatives:
        raise ValueError("calibration needs positive and negative pairs")
    pos, neg = score_pairs(embedder, positives), score_pairs(embedder, negatives)
    separable = bool(pos.min() > neg.max())
    if separable:
        threshold = float((pos.min() + neg.max()) / 2)
    else:
        # Lowest threshold with FPR <= max_fpr: just above the k-th highest negative.
        k = int(np.floor(max_fpr * len(neg)))
        threshold = float(np.nextafter(np.sort(neg)[::-1][k], np.float32(2)))
    return Calibration(
        embedder=getattr(embedder, "name", type(embedder).__name__), threshold=round(threshold, 4),
        separable=separable, n_pos=len(pos), n_neg=len(neg),
        tpr=float((pos >= threshold).mean()), fpr=float((neg >= threshold).mean()),
        auc=_auc(pos, neg), pos_min=float(pos.min()), pos_p10=float(np.percentile(pos, 10)),
        pos_median=float(np.median(pos)), neg_median=float(np.median(neg)),
        neg_p90=float(np.percentile(neg, 90)), neg_max=float(neg.max()))

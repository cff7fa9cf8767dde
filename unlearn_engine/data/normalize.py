"""Text normalisation, word n-grams and ROUGE-L, shared by matching and scoring.

Casefold + NFKC + punctuation to spaces, so "Alda Quorn's" and "alda quorn s" compare equal.
It deliberately does no confusable / homoglyph mapping: that belongs to the server's leakage
guard, which sees adversarial output; the engine sees operator input and its own corpus.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def normalize(text: str) -> str:
    """Lower-cased words separated by single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", text).split())


def words(text: str) -> list[str]:
    return normalize(text).split()


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """Word n-grams; a text shorter than ``n`` yields itself as one gram (short answers count)."""
    if not tokens:
        return set()
    if len(tokens) < n:
        return {tuple(tokens)}
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def contains_phrase(text: str, phrase: str) -> bool:
    """Whole-word containment after normalisation ("Quorn" is not in "Quornwick")."""
    p = normalize(phrase)
    return bool(p) and f" {p} " in f" {normalize(text)} "


def lcs_len(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length (ROUGE-L's core), O(len(a)·len(b))."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_recall(reference: str, candidate: str) -> float:
    """Share of the reference's words that the candidate reproduces in order."""
    ref = words(reference)
    return lcs_len(ref, words(candidate)) / len(ref) if ref else 0.0

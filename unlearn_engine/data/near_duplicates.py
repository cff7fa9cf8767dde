"""Find corpus entries that overlap a forget set: subjects, shared n-grams, then MinHash.

Three stages, cheapest first, each reporting why an entry matched:
1. ``subject`` — the entry names a forgotten subject (whole words, normalised);
2. ``ngram``   — it shares a normalised word n-gram (default 8) with a forget text or answer;
   a text shorter than n counts as one gram, so an identical short answer matches;
3. ``minhash`` — MinHash LSH over word 3-shingles proposes candidates (edited copies of similar
   length), confirmed by exact containment |A∩B| / min(|A|, |B|) >= threshold.
Stage 2 catches a forget passage quoted inside a longer document; stage 3 catches reworded or
lightly edited copies. Neither catches a true paraphrase with different words: the forget set's
own paraphrase probes (and the server's semantic guard) exist for that.

It deliberately returns decisions only; it never logs the texts it compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from datasketch import MinHash, MinHashLSH

from unlearn_engine.data.normalize import contains_phrase, ngrams, words
from unlearn_engine.data.records import Example


@dataclass(frozen=True)
class MatchConfig:
    """Thresholds for near-duplicate expansion."""

    ngram: int = 8  # long enough that shared template phrases (<= 6 words here) never match
    shingle: int = 3  # MinHash shingle size in words
    num_perm: int = 128  # MinHash permutations: ~0.09 sd on Jaccard estimates, cheap to build
    lsh_threshold: float = 0.5  # Jaccard at which LSH proposes a candidate (recall over precision)
    containment: float = 0.7  # confirmed when 70 % of the smaller shingle set is shared
    seed: int = 1  # MinHash seed; fixed so expansion is reproducible


@lru_cache(maxsize=16)
def _lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    # datasketch picks (bands, rows) by numerical integration: ~50 ms per MinHashLSH. The answer
    # depends on these two numbers only, so it is worked out once and passed as `params`.
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


@lru_cache(maxsize=16)
def _empty_minhash(num_perm: int, seed: int) -> MinHash:
    # Drawing the permutations costs ~0.5 ms per MinHash; copies share them (same seed: same
    # sketch). Never updated itself: callers update a copy.
    return MinHash(num_perm=num_perm, seed=seed)


def _views(ex: Example) -> list[list[str]]:
    # Compare the whole text and the target alone: QA variants share answers, not questions.
    views = [words(ex.text)]
    if ex.is_qa:
        views.append(words(ex.target))
    return [v for v in views if v]


class NearDuplicateMatcher:
    """Built once from the forget items; answers ``match(example)`` for corpus entries."""

    def __init__(self, forget: Iterable[Example], subjects: Iterable[str] = (),
                 config: MatchConfig | None = None) -> None:
        self.config = config or MatchConfig()
        self.subjects = tuple(s for s in subjects if s.strip())
        self._grams: set[tuple[str, ...]] = set()
        self._shingles: list[set[tuple[str, ...]]] = []
        self._lsh = MinHashLSH(threshold=self.config.lsh_threshold, num_perm=self.config.num_perm,
                               params=_lsh_bands(self.config.lsh_threshold, self.config.num_perm))
        for ex in forget:
            for view in _views(ex):
                self._grams |= ngrams(view, self.config.ngram)
                sh = ngrams(view, self.config.shingle)
                key = str(len(self._shingles))
                self._shingles.append(sh)
                self._lsh.insert(key, self._minhash(sh))

    def _minhash(self, shingles: set[tuple[str, ...]]) -> MinHash:
        mh = _empty_minhash(self.config.num_perm, self.config.seed).copy()
        mh.update_batch([" ".join(s).encode("utf-8") for s in shingles])
        return mh

    def match(self, ex: Example) -> str | None:
        """The stage that matched (``subject`` | ``ngram`` | ``minhash``), or None."""
        for subject in self.subjects:
            if contains_phrase(ex.text, subject) or (ex.subject and ex.subject == subject):
                return "subject"
        for view in _views(ex):
            if self._grams and not self._grams.isdisjoint(ngrams(view, self.config.ngram)):
                return "ngram"
        for view in _views(ex):
            sh = ngrams(view, self.config.shingle)
            if not sh:
                continue
            for key in self._lsh.query(self._minhash(sh)):
                other = self._shingles[int(key)]
                if len(sh & other) / max(1, min(len(sh), len(other))) >= self.config.containment:
                    return "minhash"
        return None


def expand(forget: Iterable[Example], corpus: Iterable[Example], subjects: Iterable[str] = (),
           config: MatchConfig | None = None) -> list[tuple[Example, str]]:
    """Corpus entries matching the forget items, each with the stage that matched."""
    matcher = NearDuplicateMatcher(forget, subjects, config)
    out = []
    for ex in corpus:
        why = matcher.match(ex)
        if why is not None:
            out.append((ex, why))
    return out

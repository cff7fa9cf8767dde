"""Forget and retain data: request value objects, corpus loading, near-duplicate expansion,
resolving a request against a corpus.

Nothing here trains or scores; it only decides *what* to forget and *what* to keep.
"""

from __future__ import annotations

from unlearn_engine.data.corpus import as_examples, load_corpus, save_examples
from unlearn_engine.data.forget_set import build_forget_set
from unlearn_engine.data.near_duplicates import MatchConfig, NearDuplicateMatcher, expand
from unlearn_engine.data.records import (Example, ForgetRequest, ForgetSet, QAPair, RetainSet)
from unlearn_engine.data.resolve import (CorpusMismatch, IndexedCorpus, Resolution,
                                         ResolutionRejected, ResolveConfig, resolve)
from unlearn_engine.data.retain_set import NEUTRAL_PROMPTS, build_retain_set

__all__ = ["CorpusMismatch", "Example", "ForgetRequest", "ForgetSet", "IndexedCorpus",
           "MatchConfig", "NEUTRAL_PROMPTS", "NearDuplicateMatcher", "QAPair", "Resolution",
           "ResolutionRejected", "ResolveConfig", "RetainSet", "as_examples", "build_forget_set",
           "build_retain_set", "expand", "load_corpus", "resolve", "save_examples"]

"""The server's corpus and what a Forget resolves to in it (the engine's resolver, served).

One `CorpusResolver` per process: it loads the configured corpus once (`--corpus`, or the demo
model's own `corpus.jsonl`) into the engine's `IndexedCorpus`, then answers, off the event loop:
`resolve(payload)` -> the request's matches (entry ids, per-item counts, the corpus digest, and
the problems that make Forget refuse it), and `items(payload, resolution)` -> the plaintext the
guard derives its entries from (the request's own items plus the matched corpus entries, read
from the corpus: nothing new is stored). The worker uses `select` to train on the same entries,
and refuses a resolution made against another corpus file.

Holds no gRPC, metrics or ledger code; never logs the texts it resolves.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from server.forget.jobs import ForgetPayload, ForgetResolution, MatchCounts
from server.guard import ForgetItems
from unlearn_engine.data.records import Example, ForgetRequest
from unlearn_engine.data.resolve import (CorpusMismatch, IndexedCorpus, ResolveConfig, problem_code,
                                         resolve, subject_problem)

logger = logging.getLogger(__name__)
CORPUS_NAME = "corpus.jsonl"  # what a demo build ships beside its weights (demo/builder.py)


def corpus_file(corpus: Path | None, model_dir: Path | None) -> Path | None:
    """The corpus a server and its workers resolve against: --corpus, else a demo build's own."""
    if corpus is not None:
        return corpus
    if model_dir is not None and (model_dir / CORPUS_NAME).is_file():
        return model_dir / CORPUS_NAME
    return None


@dataclass(frozen=True)
class Resolved:
    """A resolution, its refusal reasons, and the matched entries (for the dry run and the guard)."""

    resolution: ForgetResolution
    problems: tuple[str, ...]
    codes: tuple[str, ...]
    entries: tuple[Example, ...]


class CorpusUnavailable(Exception):
    """The corpus is still loading, or failed to load (the message says which, and why)."""


class CorpusResolver:
    def __init__(self, config: ResolveConfig | None = None) -> None:
        self.config = config or ResolveConfig()
        self._corpus: IndexedCorpus | None = None
        self._path: Path | None = None
        self._error = ""
        self._ready = threading.Event()

    def load(self, path: Path | None) -> None:
        """Blocking (seconds for ~300k entries): call from a thread. None = serve without one."""
        self._path = path
        try:
            self._corpus = IndexedCorpus.from_file(path) if path is not None else None
            if self._corpus is not None:
                logger.info("corpus %s: %d entries (%d trained), sha256 %s", path, len(self._corpus),
                            self._corpus.trained, self._corpus.digest[:12])
        except (OSError, ValueError) as exc:
            self._error = f"the corpus {path} failed to load: {exc}"
            logger.error("%s", self._error)
        self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def corpus(self) -> IndexedCorpus | None:
        if not self._ready.is_set():
            raise CorpusUnavailable("the server's corpus is still loading; retry shortly")
        if self._error:
            raise CorpusUnavailable(self._error)
        return self._corpus

    def resolve(self, payload: ForgetPayload) -> Resolved:
        """Blocking (milliseconds per item): call from a thread."""
        request = ForgetRequest(texts=payload.texts, qa_pairs=payload.qa_pairs, subjects=payload.subjects)
        corpus = self.corpus()
        if corpus is None:  # no corpus: the request's own items, and the subjects' own words
            problems = tuple(f"subjects[{i}] {p}" for i, s in enumerate(request.subjects)
                             if (p := subject_problem(s, self.config)))
            counts = MatchCounts((0,) * len(request.texts), (0,) * len(request.qa_pairs),
                                 (0,) * len(request.subjects), "")
            return Resolved(ForgetResolution(counts), problems,
                            tuple(problem_code(p) for p in problems), ())
        r = resolve(request, corpus, self.config)
        counts = MatchCounts(r.counts("text"), r.counts("qa"), r.counts("subject"), r.corpus_digest)
        entries = corpus.select(r.entry_ids, r.corpus_digest)
        return Resolved(ForgetResolution(counts, r.entry_ids), r.problems, r.codes, entries)

    def entries(self, resolution: ForgetResolution) -> tuple[Example, ...]:
        """The entries behind a stored resolution; () when it matched none or had no corpus."""
        if not resolution.entry_ids:
            return ()
        corpus = self.corpus()
        if corpus is None:
            raise CorpusMismatch("this server has no corpus, the forget was resolved against "
                                 f"{resolution.counts.corpus_digest[:12]}")
        return corpus.select(resolution.entry_ids, resolution.counts.corpus_digest)


def guard_items(payload: ForgetPayload, entries: tuple[Example, ...] = ()) -> ForgetItems:
    """What the guard derives its entries from: the request plus its matched corpus entries."""
    texts = list(payload.texts) + [e.target for e in entries if not e.is_qa]
    qa = list(payload.qa_pairs) + [(e.prompt, e.target) for e in entries if e.is_qa]
    return ForgetItems(texts=tuple(dict.fromkeys(texts)), qa=tuple(dict.fromkeys(qa)),
                       subjects=payload.subjects)

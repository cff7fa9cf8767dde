"""Forget requests and jobs as domain values (no protobuf: `server/servicers/convert.py` converts).

`ForgetPayload` is the plaintext of what must be forgotten: the ledger keeps it only sealed under
a per-forget key (forget/sealing.py), destroyed when the job is ACTIVE or FAILED. `ForgetJob` is what the ledger keeps for good (counts, states,
metrics — never content). Validation of untrusted input happens in `ForgetPayload.validated`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Iterable

from server.errors import InvalidArgument

MAX_ITEMS = 256
MAX_TEXT_CHARS = 8192
MAX_SUBJECT_WORDS = 4
MAX_KEY_CHARS = 128
MAX_REASON_CHARS = 1024


class ForgetState(str, enum.Enum):
    PENDING = "PENDING"  # durable; guard entries not derived yet (seen only after a crash)
    FILTERING = "FILTERING"  # the guard blocks it; waiting for (or between) training attempts
    TRAINING = "TRAINING"
    VERIFYING = "VERIFYING"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"
    DEACTIVATED = "DEACTIVATED"

    @property
    def terminal(self) -> bool:
        return self in (ForgetState.ACTIVE, ForgetState.FAILED, ForgetState.DEACTIVATED)


@dataclass(frozen=True)
class ForgetPayload:
    texts: tuple[str, ...] = ()
    qa_pairs: tuple[tuple[str, str], ...] = ()
    subjects: tuple[str, ...] = ()

    @classmethod
    def validated(cls, texts: Iterable[str] = (), qa_pairs: Iterable[tuple[str, str]] = (),
                  subjects: Iterable[str] = ()) -> ForgetPayload:
        """Client values -> payload (whitespace normalised), or InvalidArgument naming the field."""
        texts = tuple(t.strip() for t in texts)
        qa = tuple((q.strip(), a.strip()) for q, a in qa_pairs)
        subjects = tuple(" ".join(s.split()) for s in subjects)
        if not (texts or qa or subjects):
            raise InvalidArgument("a Forget needs at least one of texts, qa_pairs or subjects")
        for name, items in (("texts", texts), ("qa_pairs", qa), ("subjects", subjects)):
            if len(items) > MAX_ITEMS:
                raise InvalidArgument(f"at most {MAX_ITEMS} {name} per request, got {len(items)}")
        for i, t in enumerate(texts):
            if not 1 <= len(t) <= MAX_TEXT_CHARS:
                raise InvalidArgument(f"texts[{i}] must be 1..{MAX_TEXT_CHARS} non-blank characters")
        for i, (q, a) in enumerate(qa):
            if not q or not a or len(q) > MAX_TEXT_CHARS or len(a) > MAX_TEXT_CHARS:
                raise InvalidArgument(f"qa_pairs[{i}] needs a question and an answer of 1..{MAX_TEXT_CHARS} characters")
        for i, s in enumerate(subjects):
            if not 1 <= len(s.split()) <= MAX_SUBJECT_WORDS or len(s) > 200:
                raise InvalidArgument(f"subjects[{i}] must be a name of 1..{MAX_SUBJECT_WORDS} words")
        return cls(texts, qa, subjects)

    def to_json(self) -> str:
        return json.dumps({"texts": self.texts, "qa_pairs": self.qa_pairs, "subjects": self.subjects})

    @classmethod
    def from_json(cls, data: str) -> ForgetPayload:
        obj = json.loads(data)
        return cls(tuple(obj["texts"]), tuple((q, a) for q, a in obj["qa_pairs"]), tuple(obj["subjects"]))


@dataclass(frozen=True)
class Transition:
    state: ForgetState
    at: float  # unix seconds
    detail: str = ""


@dataclass(frozen=True)
class ForgetJob:
    forget_id: str
    state: ForgetState
    method: str
    reason: str
    num_texts: int
    num_qa_pairs: int
    num_subjects: int
    created_at: float
    updated_at: float
    failure_reason: str = ""
    adapter_id: str = ""
    stack_version: int = 0
    attempts: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    transitions: tuple[Transition, ...] = ()
    guard_hits: tuple[tuple[str, str, int], ...] = ()  # (stage, phase, outputs blocked)
    matches: MatchCounts = field(default_factory=lambda: MatchCounts())
    claim_epoch: int = 0  # claims so far; a worker's writes carry the epoch of its own claim
    commitment: str = ""  # HMAC of the request under the operator's key (receipts.py); "" = none


@dataclass(frozen=True)
class MatchCounts:
    """Corpus entries each request item matched at resolution, in request order (counts only)."""

    texts: tuple[int, ...] = ()
    qa_pairs: tuple[int, ...] = ()
    subjects: tuple[int, ...] = ()
    corpus_digest: str = ""  # sha256 of the corpus file; "" = resolved without a corpus


@dataclass(frozen=True)
class ForgetResolution:
    """What a Forget was resolved to: the counts (kept for good) and the corpus entry ids the
    worker trains on (erased with the plaintext once the job is ACTIVE or FAILED)."""

    counts: MatchCounts
    entry_ids: tuple[str, ...] = ()

    def __repr__(self) -> str:  # ids point at the subject's entries: keep them out of logs
        return f"ForgetResolution(entries={len(self.entry_ids)}, corpus={self.counts.corpus_digest[:12]!r})"


@dataclass(frozen=True)
class AdapterRecord:
    adapter_id: str
    forget_id: str
    path: str  # directory in the adapter store
    sha256: str  # of the manifest, which lists every file's sha256
    method: str
    rank: int
    size_bytes: int
    created_at: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StackRecord:
    version: int
    adapter_ids: tuple[str, ...]
    created_at: float


@dataclass(frozen=True)
class JobProgress:
    """One training-progress row of a job, as the ledger keeps and WatchForget streams it
    (the engine's own, richer report is `unlearn_engine.progress.Progress`)."""

    attempt: int
    step: int
    total_steps: int
    losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    elapsed_seconds: float = 0.0  # in this attempt
    eta_seconds: float = -1.0  # left in this attempt at its pace so far; -1 = not known yet

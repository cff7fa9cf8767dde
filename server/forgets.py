"""Forget requests and jobs as domain values, with their protobuf conversion.

`ForgetPayload` is the plaintext of what must be forgotten: it lives in the ledger only until
the job is ACTIVE or FAILED. `ForgetJob` is what the ledger keeps for good (counts, states,
metrics — never content). Validation of untrusted input happens in `ForgetPayload.from_pb`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from server.api import admin_pb2 as pb
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

    def to_pb(self) -> int:
        return pb.ForgetState.Value(f"FORGET_STATE_{self.value}")

    @classmethod
    def from_pb(cls, value: int) -> ForgetState:
        return cls(pb.ForgetState.Name(value).removeprefix("FORGET_STATE_"))


@dataclass(frozen=True)
class ForgetPayload:
    texts: tuple[str, ...] = ()
    qa_pairs: tuple[tuple[str, str], ...] = ()
    subjects: tuple[str, ...] = ()

    @classmethod
    def from_pb(cls, req: pb.ForgetRequest) -> ForgetPayload:
        texts = tuple(t.strip() for t in req.texts)
        qa = tuple((p.question.strip(), p.answer.strip()) for p in req.qa_pairs)
        subjects = tuple(" ".join(s.split()) for s in req.subjects)
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

    def to_pb(self) -> pb.StateTransition:
        return pb.StateTransition(state=self.state.to_pb(), at=_ts(self.at), detail=self.detail)


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

    def to_pb(self) -> pb.ForgetJob:
        return pb.ForgetJob(
            forget_id=self.forget_id, state=self.state.to_pb(), method=self.method, reason=self.reason,
            num_texts=self.num_texts, num_qa_pairs=self.num_qa_pairs, num_subjects=self.num_subjects,
            created_at=_ts(self.created_at), updated_at=_ts(self.updated_at), failure_reason=self.failure_reason,
            adapter_id=self.adapter_id, stack_version=self.stack_version, metrics=self.metrics,
            transitions=[t.to_pb() for t in self.transitions], attempts=self.attempts,
            guard_hits=[pb.GuardHitCount(stage=s, phase=p, count=n) for s, p, n in self.guard_hits])


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

    def to_pb(self, position: int, activated_at: float) -> pb.Adapter:
        return pb.Adapter(adapter_id=self.adapter_id, forget_id=self.forget_id, position=position,
                          method=self.method, rank=self.rank, size_bytes=self.size_bytes, sha256=self.sha256,
                          activated_at=_ts(activated_at), metrics=self.metrics)


@dataclass(frozen=True)
class StackRecord:
    version: int
    adapter_ids: tuple[str, ...]
    created_at: float


@dataclass(frozen=True)
class Progress:
    attempt: int
    step: int
    total_steps: int
    losses: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_pb(self) -> pb.TrainingProgress:
        return pb.TrainingProgress(attempt=self.attempt, step=self.step, total_steps=self.total_steps,
                                   losses=self.losses, metrics=self.metrics)


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts

"""Value objects at the guard's boundary: what a Forget hands in, what a hit and a step report.

None of them ever carries matched output text: a hit names the forget id, stage and phase only,
so metrics, logs and callbacks cannot become a side channel for what was forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from server.guard.config import PHASES, SOURCES, STAGE_NAMES


@dataclass(frozen=True)
class ForgetItems:
    """The plaintext of one Forget request; lives only as long as the request and the job."""

    texts: tuple[str, ...] = ()
    qa: tuple[tuple[str, str], ...] = ()  # (question, answer)
    subjects: tuple[str, ...] = ()  # names of people / things to forget, 1-4 words each

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "qa", tuple((str(q), str(a)) for q, a in self.qa))
        object.__setattr__(self, "subjects", tuple(self.subjects))

    def __repr__(self) -> str:  # never print the content (it may end up in a log)
        return f"ForgetItems(texts={len(self.texts)}, qa={len(self.qa)}, subjects={len(self.subjects)})"


@dataclass(frozen=True)
class GuardHit:
    forget_id: str
    stage: str  # exact | entity | semantic
    phase: str  # before_adapter | after_adapter (after = residual leakage)
    source: str = "output"  # output | prompt

    def __post_init__(self) -> None:
        if self.stage not in STAGE_NAMES or self.phase not in PHASES or self.source not in SOURCES:
            raise ValueError(f"bad hit labels: {self.stage!r} {self.phase!r} {self.source!r}")


class GuardStep(NamedTuple):
    """One push's result. A NamedTuple, not a dataclass: it is built per token, and a frozen
    dataclass costs ~1 µs to construct, a twentieth of the per-token budget."""

    release: str  # text that is safe to send now ("" while held back)
    hit: GuardHit | None = None
    stop: bool = False  # the stream must end (finish_reason "filtered" when hit is set)


@dataclass(frozen=True)
class PromptVerdict:
    action: str  # allow | arm (strict mode for this request) | refuse
    hits: tuple[GuardHit, ...] = ()
    # Forgets whose subject the prompt names: in strict mode an attribute of one of them anywhere
    # in the output blocks, not only next to the name.
    subject_forgets: frozenset[str] = frozenset()
    # Forgets (before their adapter) whose listed subject the prompt names in full: the subject
    # policy then applies to the whole output, not only next to the name.
    policy_forgets: frozenset[str] = frozenset()

    @property
    def refused(self) -> bool:
        return self.action == "refuse"


ALLOW = PromptVerdict("allow")

"""OutputFilter: the interface every guard stage implements, and the stage registry.

A stage has two halves. `derive` turns the plaintext of a Forget into storable entries (keyed
digests or embeddings) and runs once, at Forget time. The session half reacts to what the shared
LexicalScanner found (postings of the kinds the stage owns) and to completed sentences, and says
which forget id matched. Stages are constructed once per guard and hold no per-request state:
`start` returns a small per-session state object instead, so sessions stay cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from server.guard.config import GuardConfig
from server.guard.extract import Extracted
from server.guard.index import GuardIndex, Postings
from server.guard.keys import GuardKeys
from unlearn_engine.registry import Registry


@dataclass
class SessionFlags:
    """Per-request facts stages share: armed (strict) mode and subjects named by the prompt."""

    armed: bool = False
    prompt_forgets: frozenset[str] = frozenset()
    # Forgets whose subject is in context: named by the prompt or seen in this output.
    context: set[str] = field(default_factory=set)
    # Subject policy (subject_policy.py): forgets whose listed subject the prompt named in full,
    # and listed subjects sighted in the output that the session must check for nearby values.
    prompt_subjects: frozenset[str] = frozenset()
    subjects_seen: list[str] = field(default_factory=list)


@dataclass
class Derived:
    records: list[bytes] = field(default_factory=list)  # packed 11-byte records
    embeddings: np.ndarray | None = None  # [m, dim] float32
    context_only: np.ndarray | None = None  # [m] bool: row counts only with its subject in context


@dataclass(frozen=True)
class StageEnv:
    config: GuardConfig
    keys: GuardKeys
    index: GuardIndex
    embedder: Callable[[], Any]  # () -> SentenceEmbedder | None, loaded on first call


class OutputFilter(ABC):
    name: ClassVar[str]
    kinds: ClassVar[frozenset[int]] = frozenset()  # posting kinds this stage consumes

    def __init__(self, env: StageEnv) -> None:
        self.env = env

    @abstractmethod
    def derive(self, ex: Extracted) -> Derived: ...

    def start(self, flags: SessionFlags) -> Any:
        return None

    def on_postings(self, state: Any, flags: SessionFlags, pos: int,
                    found: list[Postings]) -> str | None:
        """A forget id when the word ending at letters-and-digits offset `pos` completes a match."""
        return None

    def holds_sentences(self, state: Any, flags: SessionFlags) -> bool:
        return False

    def on_sentence(self, state: Any, flags: SessionFlags, text: str) -> str | None:
        return None


_STAGES: Registry[type[OutputFilter]] = Registry("guard stage", KeyError)


def register_stage(name: str) -> Callable[[type[OutputFilter]], type[OutputFilter]]:
    return _STAGES.register(name)


def stage_class(name: str) -> type[OutputFilter]:
    return _STAGES.get_class(name)


def stage_names() -> list[str]:
    return sorted(_STAGES)

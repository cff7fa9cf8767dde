"""Value objects for forget / retain data: one ``Example`` type for QA pairs and free texts.

An ``Example`` is what the engine trains on and scores: a ``prompt`` (a question, or "" for free
text) and a ``target`` (the answer or the text) whose tokens are the ones that count. ``fact`` is
the span that carries the knowledge (TOFU-style templates swamp token scores on small models, so
metrics look for the fact, not the sentence). ``perturbed`` holds plausible wrong targets.

This module does no I/O and no tokenization; see ``corpus.py`` and ``unlearn_engine.encoding``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

SPLITS = ("train", "paraphrase", "holdout")


@dataclass(frozen=True)
class QAPair:
    """A question and its answer, as an operator sends them in a forget request."""

    question: str
    answer: str
    fact: str = ""  # the span of `answer` that must not be reproduced; "" -> the whole answer


@dataclass(frozen=True)
class ForgetRequest:
    """What an operator asks to forget. Any mix of the three kinds; at least one item overall."""

    texts: tuple[str, ...] = ()
    qa_pairs: tuple[QAPair, ...] = ()
    subjects: tuple[str, ...] = ()  # names / entities; matched against a configured corpus

    def __post_init__(self) -> None:
        # Accept lists and (question, answer) tuples from callers; store immutable QAPairs.
        object.__setattr__(self, "texts", tuple(t for t in self.texts if t and t.strip()))
        pairs = tuple(p if isinstance(p, QAPair) else QAPair(*p) for p in self.qa_pairs)
        object.__setattr__(self, "qa_pairs", pairs)
        object.__setattr__(self, "subjects", tuple(s.strip() for s in self.subjects if s.strip()))
        if not (self.texts or self.qa_pairs or self.subjects):
            raise ValueError("a ForgetRequest needs at least one text, QA pair or subject")


@dataclass(frozen=True)
class Example:
    """One unit to train on or score. ``prompt`` is conditioning only; ``target`` is scored."""

    prompt: str
    target: str
    fact: str = ""  # "" -> the whole target carries the fact
    perturbed: tuple[str, ...] = ()  # plausible wrong targets (same template, wrong value)
    subject: str = ""  # the person / entity this is about, when known
    split: str = "train"  # corpus split: train | paraphrase | holdout
    source: str = "request"  # request | corpus | generated | synthetic

    def __post_init__(self) -> None:
        if not self.target.strip():
            raise ValueError("an Example needs a non-empty target")
        object.__setattr__(self, "perturbed", tuple(self.perturbed))

    @property
    def is_qa(self) -> bool:
        return bool(self.prompt)

    @property
    def fact_text(self) -> str:
        return self.fact or self.target

    @property
    def text(self) -> str:
        """The full training text (prompt, a space, target), as the demo model was trained."""
        return f"{self.prompt} {self.target}" if self.prompt else self.target

    @classmethod
    def from_record(cls, obj: Any, source: str = "corpus") -> Example:
        """Build from a demo-corpus record or a JSONL mapping (QA or ``{"text": ...}``)."""
        get = obj.get if isinstance(obj, Mapping) else (lambda k, d=None: getattr(obj, k, d))
        subject = str(get("person", "") or get("subject", "") or "")
        split = str(get("split", "train") or "train")
        if get("question") is not None and get("answer") is not None:
            return cls(prompt=str(get("question")), target=str(get("answer")),
                       fact=str(get("fact", "") or ""),
                       perturbed=tuple(str(p) for p in (get("perturbed", ()) or ())),
                       subject=subject, split=split, source=source)
        if get("text") is not None:
            return cls(prompt="", target=str(get("text")), subject=subject, split=split,
                       source=source)
        raise ValueError("record needs question+answer or text")

    def to_record(self) -> dict[str, Any]:
        """The JSONL form read back by ``from_record``."""
        if not self.is_qa:
            return {"kind": "text", "text": self.target, "person": self.subject,
                    "split": self.split}
        out: dict[str, Any] = {"question": self.prompt, "answer": self.target,
                               "person": self.subject, "split": self.split}
        if self.fact:
            out["fact"] = self.fact
        if self.perturbed:
            out["perturbed"] = list(self.perturbed)
        return out


@dataclass(frozen=True)
class ForgetSet:
    """Everything to forget, plus the probes and references that verify it.

    ``examples`` are trained on. ``paraphrases`` are never trained on; they probe whether the
    knowledge (not just the wording) is gone. ``references`` are texts the model never saw
    (held-out people, or the forget questions with wrong answers): the production stand-in for a
    retrained model — forgotten data should look like them, no more and no less likely.
    ``anchors`` are never-seen texts about *other* held-out people than the references': a
    method may train on them to keep strangers looking like strangers (an adapter that drifts
    on them moves the yardstick the gate measures with); the gate never scores them.
    """

    examples: tuple[Example, ...]
    paraphrases: tuple[Example, ...] = ()
    references: tuple[Example, ...] = ()
    subjects: tuple[str, ...] = ()
    anchors: tuple[Example, ...] = ()
    expanded: int = 0  # near-duplicates added from the corpus

    def __post_init__(self) -> None:
        if not self.examples:
            raise ValueError("the forget set is empty: nothing in the request or corpus matched")

    @property
    def qa(self) -> tuple[Example, ...]:
        return tuple(e for e in self.examples if e.is_qa)


@dataclass(frozen=True)
class RetainSet:
    """Data whose behaviour must not change; used as the retain loss and the utility probe."""

    examples: tuple[Example, ...]

    def __post_init__(self) -> None:
        if not self.examples:
            raise ValueError("the retain set is empty")

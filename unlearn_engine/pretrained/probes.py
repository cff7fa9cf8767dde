"""General-knowledge questions for pretrained models: the hand-written candidates and the
per-model probe sets built from them.

``general_knowledge.tsv`` holds questions about capitals, authors, scientists and dates with
their accepted answers; ``bench/general_knowledge.py`` asks a model each one and keeps those it
answers correctly in ``<model>_general_knowledge.jsonl`` (split ``probe``: utility is measured on
them; split ``retain``: the model's own replies the worker may train on to keep its knowledge).

It reads data files only: it asks no model and trains nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from unlearn_engine.data.normalize import contains_phrase

DATA = Path(__file__).resolve().parent / "data"
CANDIDATES = DATA / "general_knowledge.tsv"


@dataclass(frozen=True)
class Candidate:
    category: str
    question: str
    answers: tuple[str, ...]  # accepted forms; any one, as whole words, is correct


@dataclass(frozen=True)
class KnownAnswer:
    """A question the base model answers correctly, with its own reply."""

    category: str
    question: str
    answer: str  # the accepted form found in the reply
    reply: str  # the base model's greedy chat answer
    split: str  # "probe" (measure only) or "retain" (may be trained on)


def read_candidates(path: Path = CANDIDATES) -> list[Candidate]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        category, question, answers = line.split("\t")
        out.append(Candidate(category, question, tuple(a for a in answers.split("|") if a)))
    return out


def score_replies(cands: Sequence[Candidate], replies: Sequence[str]) -> list[str]:
    """Per candidate, the first accepted answer its reply contains ("" when none does)."""
    return [next((a for a in c.answers if contains_phrase(r, a)), "") for c, r in zip(cands, replies)]


def through_fact(reply: str, fact: str) -> str:
    """``reply`` cut after the sentence that first states ``fact`` (whole words); the whole reply
    when no sentence end follows it. The kept replies are greedy answers cut at a token budget:
    40 % of the smollm2 retain split stops mid-sentence ("... The capital of Albania is Tirana,
    capital of"), and a trainer that appends EOS to such a target teaches the model to stop
    mid-sentence. Cut, 21 of those 28 end where the fact has been said; the other 7 state it in
    the unfinished sentence and stay as they are (ending them by hand made "Tim Berners.")."""
    for m in _SENTENCE_END.finditer(reply):
        head = reply[:m.end()].rstrip()
        if contains_phrase(head, fact):
            return head
    return reply


# A full stop, "!" or "?" before a capitalised word or the end; not after an initial ("A.A. Orwell").
_SENTENCE_END = re.compile(r"(?<!\b[A-Z])[.!?](?=\s+[A-Z\"'(]|\s*$)")


# Retain-only question sets (every kept row split ``retain``; never the bench's probe, though the
# worker may hold some out as its gate's retain probe, as with the ``retain`` split): ``author_retain.tsv``
# asks "Who wrote <book>?" for books ``general_knowledge.tsv`` never names, the slot a forget of
# an author's name costs (bench/results/forget_real_subject_worker.md). ``general_retain.tsv``
# asks about other facts of the probe set's kinds (US state capitals, currencies, languages,
# other people and events): more and more varied retain data, and a larger gate retain probe.
RETAIN_SETS = ("author_retain", "general_retain")


def probe_file(name: str, stem: str = "general_knowledge") -> Path:
    return DATA / f"{name}_{stem}.jsonl"


def load_known(name: str, split: str | None = None, stem: str = "general_knowledge") -> list[KnownAnswer]:
    """The model's kept questions of set ``stem`` (all, or one split); [] when no set was built
    for it."""
    path = probe_file(name, stem)
    if not path.exists():
        return []
    rows = [KnownAnswer(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if split is None or r.split == split]

"""Counterfactual copies of forget examples: the same text about a person the model never saw.

What a model that never learned a person does on a question about them is what the same model
does on the same question about any *other* never-seen person: a prior over plausible values,
nothing more. So a copy of a forget example with its subject swapped for a stand-in name, and
its true value for a wrong one, shows what the answer should look like once the person is
forgotten (the "anchored term -> generic" idea of Eldan & Russinovich's "Who's Harry Potter").
Stand-in names come from held-out people (never trained), or, when there are none, from
scrambling the subject's own letters; wrong values from the example's perturbed answers, or a
scramble of its fact.

This module only rewrites text and maps character offsets; ``methods.counterfactual`` tokenises
and trains. It never logs the texts.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from unlearn_engine.data.records import Example

NAME, VALUE = "name", "value"  # what a swapped span held


@dataclass(frozen=True)
class Rewrite:
    """``original`` rewritten as ``text``; ``spans`` = (orig_start, orig_end, new_start,
    new_end, kind) per swapped span, in order."""

    original: str
    text: str
    spans: tuple[tuple[int, int, int, int, str], ...]

    def new_offset(self, pos: int) -> int | None:
        """Where an original character offset outside every swapped span lands in ``text``
        (None inside a span)."""
        shift = 0
        for o0, o1, n0, n1, _ in self.spans:
            if pos < o0:
                break
            if pos < o1:
                return None
            shift = n1 - o1
        return pos + shift

    def span_at(self, start: int, end: int, new: bool = False) -> int | None:
        """The index in ``spans`` of the swapped span that characters [start, end) overlap (of
        ``text`` when ``new``, else of ``original``), or None."""
        for i, (o0, o1, n0, n1, _) in enumerate(self.spans):
            a, b = (n0, n1) if new else (o0, o1)
            if start < b and a < end:
                return i
        return None

    def kind_at(self, start: int, end: int, new: bool = False) -> str | None:
        """The kind of the swapped span that characters [start, end) overlap (of ``text``
        when ``new``, else of ``original``), or None."""
        i = self.span_at(start, end, new)
        return None if i is None else self.spans[i][4]


def apply(text: str, edits: Sequence[tuple[int, int, str, str]]) -> Rewrite:
    """``text`` with non-overlapping ``edits`` (start, end, replacement, kind) applied."""
    out, spans, last, new_len = [], [], 0, 0
    for start, end, rep, kind in sorted(edits):
        out.append(text[last:start])
        new_len += start - last
        spans.append((start, end, new_len, new_len + len(rep), kind))
        out.append(rep)
        new_len += len(rep)
        last = end
    out.append(text[last:])
    return Rewrite(text, "".join(out), tuple(spans))


def _name_pairs(subject: str, stand_in: str) -> list[tuple[str, str]]:
    """(original, replacement) pairs, the full name first, then its words one by one (bios say
    "Memzammoor studied ..."), when both names have the same number of words."""
    pairs = [(subject, stand_in)]
    words, new_words = subject.split(), stand_in.split()
    if len(words) == len(new_words) and len(words) > 1:
        pairs += [(w, n) for w, n in zip(words, new_words) if len(w) >= 3]
    return pairs


def name_edits(text: str, subject: str, stand_in: str) -> list[tuple[int, int, str, str]]:
    """Edits replacing every whole-word occurrence of ``subject`` (or one of its words)."""
    pairs = _name_pairs(subject, stand_in)
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(o) for o, _ in pairs) + r")(?!\w)")
    lookup = dict(pairs)
    return [(m.start(), m.end(), lookup[m.group(1)], NAME) for m in pattern.finditer(text)]


def _rng(seed: int, key: str) -> random.Random:
    """A generator fixed by (seed, key), independent of Python's hash seed."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def stand_ins(subject: str, references: Iterable[Example], k: int, seed: int = 0) -> list[str]:
    """Up to ``k`` never-seen names for ``subject``: held-out subjects with the same number of
    words, else scrambles of the subject (``scramble_value``). Deterministic for (subject, seed)."""
    rng = _rng(seed, subject)
    n_words = len(subject.split())
    pool = sorted({r.subject for r in references
                   if r.subject and r.subject != subject and len(r.subject.split()) == n_words})
    rng.shuffle(pool)
    names = pool[:k]
    tries = 0
    while len(names) < k and tries < 10 * k:
        tries += 1
        cand = scramble_value(subject, rng)
        if cand != subject and cand not in names:
            names.append(cand)
    return names


def scramble_value(value: str, rng: random.Random) -> str:
    """A never-seen value (or name) shaped like ``value``: inside each word of 4+ characters
    the letters after the first (or the digits) are shuffled; short words ("of", "The", "1")
    stay."""
    def one(word: str) -> str:
        if len(word) < 4:
            return word
        rest = list(word[1:])
        for _ in range(5):
            rng.shuffle(rest)
            if "".join(rest) != word[1:]:
                break
        return word[:1] + "".join(rest)
    return " ".join(one(w) for w in value.split(" "))


def fact_span(ex: Example) -> tuple[int, int] | None:
    """Character span of the example's fact in ``ex.text``, when it has a distinct one."""
    if not ex.fact or ex.fact == ex.target:
        return None
    at = ex.target.find(ex.fact)
    if at < 0:
        return None
    base = len(ex.prompt) + 1 if ex.prompt else 0
    return base + at, base + at + len(ex.fact)


def value_swaps(ex: Example, rng: random.Random) -> list[tuple[int, int, str]]:
    """(start, end, replacement) in ``ex.text`` that turn the true value into a wrong one: each
    perturbed answer's differing middle, or, without perturbed answers, a scramble of the fact.
    [] when neither exists."""
    base = len(ex.prompt) + 1 if ex.prompt else 0
    out = []
    for wrong in ex.perturbed:
        head = len(os.path.commonprefix([ex.target, wrong]))
        tail = len(os.path.commonprefix([ex.target[head:][::-1], wrong[head:][::-1]]))
        if head + tail < len(ex.target):
            out.append((base + head, base + len(ex.target) - tail,
                        wrong[head:len(wrong) - tail]))
    if out:
        return out
    span = fact_span(ex)
    return [(span[0], span[1], scramble_value(ex.fact, rng))] if span else []


def counterfactuals(ex: Example, names: Sequence[str], seed: int = 0) -> list[Rewrite]:
    """Rewrites of the example's full text (``ex.text``: prompt, space, target), one per
    stand-in name: the subject swapped for the name and the true value (if known) for a wrong
    one (``value_swaps``, taken in turn). [] when the example has no subject or never names
    it. A name never spans the prompt/target boundary (the space), so
    ``new_offset(len(ex.prompt))`` is the boundary in each rewrite."""
    if not ex.subject:
        return []
    rng = _rng(seed, ex.text)
    values = value_swaps(ex, rng)
    out = []
    for i, name in enumerate(names):
        value = values[i % len(values)] if values else None
        edits = [e for e in name_edits(ex.text, ex.subject, name)
                 if value is None or e[1] <= value[0] or e[0] >= value[1]]
        if not edits:
            continue
        if value is not None:
            edits.append((value[0], value[1], value[2], VALUE))
        out.append(apply(ex.text, edits))
    return out


def chat_view(ex: Example, rw: Rewrite, rendered: str) -> tuple[str, Rewrite, int, int] | None:
    """``ex`` and its rewrite as a chat model is trained on them: the question inside the chat
    template's turn (``rendered``, ``encoding.chat_prefix``), the target right after it, instead
    of ``ex.text``'s "prompt target". Returns (chat text, the rewrite moved onto it, where the
    answer starts in each); None when the template does not hold the question verbatim or a swapped
    span crosses from question to answer. The answer's start is returned for both texts (an
    answer may open with a swapped name, where ``Rewrite.new_offset`` has no answer)."""
    at = rendered.find(ex.prompt)
    if not ex.prompt or at < 0:
        return None
    n_prompt, head = len(ex.prompt), len(rendered)
    edits = []
    for o0, o1, n0, n1, kind in rw.spans:
        if o1 <= n_prompt:
            shift = at
        elif o0 >= n_prompt + 1:
            shift = head - (n_prompt + 1)
        else:
            return None
        edits.append((o0 + shift, o1 + shift, rw.text[n0:n1], kind))
    text = rendered + ex.target
    grow = sum(len(rep) - (e - s) for s, e, rep, _ in edits if e <= head)
    return text, apply(text, edits), head, head + grow

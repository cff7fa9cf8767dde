"""Subject policy, the session's half: does raw output text carry a value next to a listed name?

A Forget that lists a subject ("Zaro Quillmoor", "J.K. Rowling") asks that the subject not be
talked about, including facts no corpus entry spelled out and facts that are themselves names
("Who wrote Harry Potter?" -> "...by J.K. Rowling"). The entity stage sees digests only; under the
"value" policy it hands each sighting of a listed full name to the session, which asks this
module whether a *value word* lies within the entity window on either side of it:

* a word with a digit ("1961", "3rd", "221B"), or an unambiguous month name ("july");
* a capitalised word that does not open a sentence ("Harry Potter", "Brelow", "Guild"), other
  than the name itself: the run of capitalised words and initials that ends where the name did.

Lower-case facts ("works as a tinker") are not values: the "name" policy is the one that keeps
them out. When the prompt named the subject in full, the whole output is in scope: "name" blocks
any word, "value" any value word. Plain functions over strings; the session owns offsets.
"""

from __future__ import annotations

import re

WORD = re.compile(r"[^\W_][\w'’]*")
# Month names that are not also everyday words ("may", "march" are; capitalised they count anyway).
_MONTHS = frozenset("january february april june july august september october november december "
                    "jan feb apr jun jul aug sep sept oct nov dec".split())
_OPENERS = frozenset(".!?:;\n")
_NAME_GAP = re.compile(r"[\s.'’-]*")  # between the words of a name: "J.K. Rowling", "O'Neil"
_MAX_NAME_WORDS = 6


def opens_sentence(text: str, start: int) -> bool:
    """Whether the word at `start` is the first of a sentence (or of the text we have)."""
    j = start - 1
    while j >= 0 and (text[j] in " \t\"'“”‘’([*_#>" or text[j] == "\r"):
        j -= 1
    return j < 0 or text[j] in _OPENERS


def is_value(text: str, m: re.Match[str]) -> bool:
    w = m.group()
    if any(c.isdigit() for c in w):
        return True
    if w.casefold() in _MONTHS:
        return True
    return (w[0].isupper() and len(w) >= 2 and re.split(r"['’]", w)[0] != "I"
            and not opens_sentence(text, m.start()))


def name_start(text: str, end: int) -> int:
    """Start of the run of capitalised words / initials that ends at `end` (the sighted name)."""
    words = list(WORD.finditer(text, max(0, end - 160), end))
    start = end
    for m in reversed(words[-_MAX_NAME_WORDS:]):
        gap = text[m.end():start]
        if not (m.group()[0].isupper() and _NAME_GAP.fullmatch(gap)):
            break
        start = m.start()
    return start


def value_near(text: str, at: int, lo: int, hi: int) -> bool:
    """A value word in text[lo:hi] other than the name that ends at `at`. `lo` may fall inside a
    word (the window's edge): that word is skipped. `hi` must be a word boundary."""
    if 0 < lo < len(text) and text[lo - 1].isalnum():
        while lo < hi and text[lo].isalnum():
            lo += 1
    first = name_start(text, at) if 0 <= at <= len(text) else at
    for m in WORD.finditer(text, lo, hi):
        if first <= m.start() < at:
            continue
        if is_value(text, m):
            return True
    return False


def says_anything(policy: str, text: str, lo: int, hi: int) -> bool:
    """The prompt named the subject: under "name" any word in text[lo:hi] blocks, under
    "value" any value word."""
    if policy == "name":
        return WORD.search(text, lo, hi) is not None
    return any(is_value(text, m) for m in WORD.finditer(text, lo, hi))

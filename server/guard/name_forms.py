"""Name forms of a listed subject: the other ways a text names the same person.

An operator lists "J.K. Rowling"; users and models also write "Joanne Rowling", "J. Rowling",
"JK Rowling" or just "Rowling". The guard matches folded letters at word starts, so spacing and
punctuation of the listed form are free ("J. K. Rowling" folds to "jkrowling"); what this module
adds is other *words*. The rule, for a listed name of two or more words whose last word (the
surname) has at least 4 letters:

* the first initial and the surname ("J. Rowling" -> "jrowling"), and all initials and the
  surname ("Stephen Edwin King" -> "S. E. King" -> "seking");
* the surname alone, with any first name in front of it ("Rowling", "Joanne Rowling"), when it
  is *distinctive*: not an English dictionary word in any case or number (Webster's Second
  International word list, shipped by ``english-words``). "King", "Potter", "Gates", "Baker" and
  place names ("Washington") are dictionary words: only the full name and the initial forms
  block for them, so "the king of France" stays free. So are a few surnames of famous people
  ("Dumbledore" is an old word for a bumblebee, "Newton" a unit): an operator who wants the bare
  surname blocked lists it as a subject of its own.

A first name alone never counts (many people share one). Single-word subjects ("Hogwarts") are
the listed form already. This module only turns a name into folded strings; it runs at derive
time (one dictionary load per process, ~0.5 s, done by ``LeakageGuard.warm_up``), never on
the per-token path.
"""

from __future__ import annotations

import functools
import pickle
from importlib import resources

from server.guard.normalize import words

SURNAME_MIN_CHARS = 4  # "Lee", "Cox": too many people and words to block alone


@functools.lru_cache(maxsize=1)
def dictionary_words() -> frozenset[str]:
    """Folded words of Webster's Second International (235,970 entries, public domain)."""
    data = resources.files("english_words").joinpath("data", "web2.pickle").read_bytes()
    return frozenset(w.casefold() for w in pickle.loads(data))  # a pinned package's own data


def is_dictionary_word(word: str) -> bool:
    """``word`` (folded) or its singular is a dictionary word ("gates" -> "gate")."""
    common = dictionary_words()
    return word in common or (word.endswith("s") and word[:-1] in common)


def subject_forms(subject: str, min_chars: int = 3) -> list[str]:
    """Folded letter strings that name ``subject``: its full name first, then the forms above."""
    ws = words(subject)
    full = "".join(ws)
    forms = [full] if len(full) >= min_chars else []
    if len(ws) < 2 or len(ws[-1]) < SURNAME_MIN_CHARS:
        return forms
    surname = ws[-1]
    forms += [ws[0][0] + surname, "".join(w[0] for w in ws[:-1]) + surname]
    if not is_dictionary_word(surname):
        forms.append(surname)
    return list(dict.fromkeys(f for f in forms if len(f) >= min_chars))

"""Hidden channels that keep the letters' places: rot13 and leetspeak.

Each is met where it is cheapest (base64 / base32 / hex runs, which re-encode whole bytes, are
decoded while they stream: decoded.py):

* rot13 is a fixed letter substitution, so the *derive* side also stores the rot13 form of every
  char record (`char_variants`): the ordinary scanner then finds rot13 copies at no per-token cost.
* Leetspeak (4→a, 3→e, 1→i/l, 0→o, 5→s, 7→t, @→a, $→s, ...) is many-to-one and mixed freely with
  plain letters, so the stream side must fold it: a second LexicalScanner reads the output through
  `LEET` and matches leet-folded digests. It is a separate view so that the main char view keeps
  digits as digits (a phone number must not match every word that folds to the same letters). The
  session starts it only at a word mixing letters and digits or at @ $ |, and it looks anything up
  only near a digit or symbol (elsewhere the main view already sees the same).

Nothing here hashes entries, decides policy or releases text.
"""

from __future__ import annotations

import string

ROT13 = str.maketrans(string.ascii_lowercase,
                      string.ascii_lowercase[13:] + string.ascii_lowercase[:13])
# Applied after normal folding (so fullwidth digits are ASCII already). Digits map injectively
# (9→q, not g, so that 1969 and 1966 stay apart); l and i merge because "1" stands for either.
LEET = str.maketrans({"4": "a", "@": "a", "8": "b", "3": "e", "6": "g", "1": "i", "l": "i",
                      "!": "i", "|": "i", "0": "o", "9": "q", "5": "s", "$": "s", "7": "t",
                      "2": "z"})
# Where the leet view can differ from the main view in what it matches: only grams near one of
# these need a leet lookup.
LEET_GATE = frozenset("0123456789@$!|")


def rot13(s: str) -> str:
    return s.translate(ROT13)


def leet(s: str) -> str:
    return s.translate(LEET)


def char_variants(s: str, encodings: tuple[str, ...]) -> list[str]:
    """Encoded forms of a folded letters-and-digits string that the derive side stores too."""
    out: list[str] = []
    if "rot13" in encodings:
        r = rot13(s)
        if r != s:
            out.append(r)
    if "leet" in encodings:
        v = leet(s)
        if v != s:
            out.append(v)
    return out

"""Text normalization shared by entry derivation and output scanning.

Every code point is folded on its own: compatibility decomposition (NFKD, which covers NFKC's
fullwidth / ligature / math-alphabet folding), casefold, homoglyph map, and removal of every
combining mark and format character (zero-width, bidi controls, soft hyphen, tags, variation
selectors). Dropping *all* combining marks — accents included — is deliberate: it makes the fold
per-code-point, so a stream can be folded chunk by chunk with no look-ahead (an accent arriving in
the next chunk cannot change what was already folded), and "Élena" matches "Elena".

The folded text is then split into *words* (runs of letters and digits); everything else is a
separator. This module does not hash, hold back or decide anything.
"""

from __future__ import annotations

import unicodedata

from server.guard.homoglyphs import homoglyph_map

# Hangul fillers render as nothing but are letters (Lo), so the category test misses them.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_DROP_CATEGORIES = frozenset(("Mn", "Me", "Cf"))
# Separators that end a sentence (after folding, so fullwidth forms are already ASCII).
SENTENCE_END = frozenset(".!?。")
LINE_BREAKS = frozenset("\n\r\u2028\u2029\x0b\x0c\x85")
# Bump when folding changes: entries derived under another version would silently never match.
NORMALIZER_VERSION = 1
_CACHE_LIMIT = 65536  # distinct code points remembered; an adversary cannot grow it further


def _fold_char(ch: str) -> str:
    hg = homoglyph_map()
    out: list[str] = []
    for c in unicodedata.normalize("NFKD", ch):
        if c in hg:  # before casefold too: uppercase Cyrillic "В" imitates "B", its lowercase nothing
            out.append(hg[c])
            continue
        for d in unicodedata.normalize("NFKD", c.casefold()):
            if d in _INVISIBLE_LETTERS or unicodedata.category(d) in _DROP_CATEGORIES:
                continue
            out.append(hg.get(d, d))
    return "".join(out)


class _FoldTable(dict):
    """str.translate table computed on first use of each code point."""

    def __missing__(self, cp: int) -> str:
        folded = _fold_char(chr(cp))
        if len(self) < _CACHE_LIMIT:
            self[cp] = folded
        return folded


FOLD = _FoldTable({cp: chr(cp).lower() for cp in range(128)})


def fold(text: str) -> str:
    """Fold a whole string (derivation side and prompts)."""
    if text.isascii():
        return text.lower()
    return text.translate(FOLD)


def fold_char(ch: str) -> str:
    """Fold one code point (stream side, which needs each raw offset)."""
    return FOLD[ord(ch)]


def words(text: str) -> list[str]:
    """The words of `text` after folding: maximal runs of letters and digits."""
    out: list[str] = []
    cur: list[str] = []
    for c in fold(text):
        if c.isalnum():
            cur.append(c)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


def split_sentences(text: str) -> list[str]:
    """Raw sentences: split after . ! ? followed by whitespace, and at line breaks."""
    out: list[str] = []
    start = 0
    n = len(text)
    for i, c in enumerate(text):
        end = False
        if c in LINE_BREAKS:
            end = True
        elif fold_char(c) in SENTENCE_END and (i + 1 == n or text[i + 1].isspace()):
            end = True
        if end:
            s = text[start:i + 1].strip()
            if s:
                out.append(s)
            start = i + 1
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def semantic_text(text: str) -> str:
    """What the sentence embedder sees: folded words joined by spaces, punctuation dropped.

    The same function feeds derivation, the output stream and calibration, so thresholds carry
    over; MiniLM lowercases anyway, and dropping punctuation removes a cheap way to move cosines.
    """
    return " ".join(words(text))

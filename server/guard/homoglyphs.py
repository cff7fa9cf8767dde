"""Map of confusable homoglyphs to the ASCII letter or digit they imitate.

Built once, lazily, from the Unicode confusables data shipped by `confusable-homoglyphs`. Only
non-ASCII characters are mapped: ASCII look-alike pairs (l/1/I, O/0) are left alone, because
folding them would merge ordinary words ("l0ve" is leetspeak, not a homoglyph attack).
"""

from __future__ import annotations

import functools
import json
import unicodedata
from importlib import resources


def _rank(src: str, target: str) -> tuple[int, int, str]:
    # A letter should become a letter and a digit a digit (Cyrillic "з" looks like both "3" and
    # "z"), a lowercase glyph a lowercase letter (palochka "ӏ" imitates "l", not "I"); ties
    # break alphabetically so the map is deterministic across runs and machines.
    src_is_digit = unicodedata.category(src) in ("Nd", "No")
    return (int(target.isdigit() != src_is_digit), int(target.isupper() != src.isupper()), target)


@functools.lru_cache(maxsize=1)
def homoglyph_map() -> dict[str, str]:
    """{non-ASCII char: lowercase ASCII letter or digit it is confusable with}."""
    raw = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json")
                     .read_text(encoding="utf-8"))
    # The data lists each character's look-alikes, not always symmetrically: read both ways.
    candidates: dict[str, set[str]] = {}
    for src, glyphs in raw.items():
        looks = [g["c"].strip("\u200e\u200f") for g in glyphs]
        if len(src) == 1 and not src.isascii():
            candidates.setdefault(src, set()).update(
                c for c in looks if len(c) == 1 and c.isascii() and c.isalnum())
        elif len(src) == 1 and src.isascii() and src.isalnum():
            for c in looks:
                if len(c) == 1 and not c.isascii():
                    candidates.setdefault(c, set()).add(src)
    return {src: min(t, key=lambda x: _rank(src, x)).lower()
            for src, t in candidates.items() if t}

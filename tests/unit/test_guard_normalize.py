"""Leakage guard normalization: every obfuscation folds to the same words."""

from __future__ import annotations

import pytest

from server.guard.normalize import fold, semantic_text, split_sentences, words


@pytest.mark.parametrize("text", [
    "Marta", "MARTA", "mArTa", "Ｍａｒｔａ", "Mаrtа", "Ma\u200brta", "Ma\u00adrta", "M\u0332a\u0332rta",
    "\u202eMarta\u202c", "Márta", "𝐌𝐚𝐫𝐭𝐚", "Ma\U000e0041rta", "Ma\ufe0frta",
])
def test_obfuscations_fold_to_the_same_word(text: str) -> None:
    assert words(text) == ["marta"]


def test_separators_and_punctuation() -> None:
    assert words("J-o-h-n, **bold** _x_ `c`\nnext") == ["j", "o", "h", "n", "bold", "x", "c", "next"]
    assert fold("Straße ﬁsh ½") == "strasse fish 1⁄2"


def test_sentences() -> None:
    assert split_sentences("Dr. Who came. Then 3.5 kg left!\nNew line") == [
        "Dr.", "Who came.", "Then 3.5 kg left!", "New line"]
    assert semantic_text("Elena's BOOK, “The Sea”.") == "elena s book the sea"

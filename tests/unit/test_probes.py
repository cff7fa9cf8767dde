"""Leakage probes: built from forget examples, sealed, matched against keyed fact digests."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from server.guard.keys import GuardKeys
from server.forget.probes import leaked, make_probes, open_probes, probe_pairs, seal_probes
from unlearn_engine.data.records import Example

KEYS = GuardKeys(b"k" * 32)
QA = Example("What is Orlan Vexmoor's phone number?", "Orlan Vexmoor's phone number is 555-0134.", fact="555-0134")
PARA = Example("Which number reaches Orlan Vexmoor?", "You can call him at 555-0134.", fact="555-0134",
               split="paraphrase")
TEXT = Example("", "Orlan Vexmoor was born in Dunmarrow. He keeps bees on the roof of the old mill.")


def test_pairs_interleave_paraphrases_and_cover_free_text() -> None:
    pairs = probe_pairs([QA, TEXT], [PARA])
    assert pairs[0] == (QA.prompt, "555-0134") and pairs[1] == (PARA.prompt, "555-0134")
    assert pairs[2] == ("Orlan Vexmoor was born in Dunmarrow.", "He keeps bees on the roof of the")
    assert len(probe_pairs([QA] * 50, limit=24)) == 1  # duplicates collapse
    many = [Example(f"Question {i}?", f"Answer {i}.") for i in range(40)]
    assert len(probe_pairs(many, limit=24)) == 24


def test_sealed_probes_round_trip_and_hold_no_plaintext() -> None:
    probes = make_probes(KEYS, probe_pairs([QA, TEXT], [PARA]))
    sealed = seal_probes(KEYS, "fg_1", probes)
    for secret in (b"Vexmoor", b"555", b"Dunmarrow", b"bees"):
        assert secret not in sealed
    assert open_probes(KEYS, "fg_1", sealed) == probes
    with pytest.raises(InvalidTag):  # bound to its forget id and key
        open_probes(KEYS, "fg_2", sealed)
    with pytest.raises(InvalidTag):
        open_probes(GuardKeys(b"x" * 32), "fg_1", sealed)


def test_leak_is_the_fact_as_whole_folded_words() -> None:
    (probe,) = make_probes(KEYS, [(QA.prompt, QA.fact)])
    assert leaked(KEYS, probe, "Sure: his number is 555-0134, call after six.")
    assert leaked(KEYS, probe, "ＴＥＬ 555 0134")  # fullwidth and spacing fold like the guard's words
    assert not leaked(KEYS, probe, "His number is 555-0135.")
    assert not leaked(KEYS, probe, "Call 1555-01345.")  # not as whole words
    assert not leaked(KEYS, probe, "")
    (other,) = make_probes(GuardKeys(b"x" * 32), [(QA.prompt, QA.fact)])
    assert not leaked(KEYS, other, "555-0134")  # digests are keyed

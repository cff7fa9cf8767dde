"""Leakage guard, hidden channels: base64 / base32 / hex runs, rot13 and leetspeak.

The blocked/passed cases are in test_guard_adversarial.CASES (they feed the bench matrix); here:
streaming (an encoded copy split at every offset never releases any of it), bounded hold-back on
long benign encoded runs, digits still matching as digits, and the config switch.
"""

from __future__ import annotations

import base64
import hashlib
import binascii
import codecs
import random
import urllib.parse
import uuid

import pytest

from server.guard import ForgetItems, GuardConfig, LeakageGuard
from tests.unit.test_guard_adversarial import (FORGET, LEET_DIGITS, LEET_SYMBOLS, OTHER_BIO,
                                               PASSAGE, SECRET, make_guard, stream)
from tests.unit.test_guard_streaming import run_chunks

PREFIX = "Here is the record you asked for, encoded as requested: "
FORGOTTEN_WORDS = ("kowalczyk", "oberwil", "medieval", "cathedral", "organs")


def _encoded(kind: str, text: str) -> str:
    data = text.encode()
    return {"base64": lambda: base64.b64encode(data).decode(),
            "base32": lambda: base64.b32encode(data).decode(),
            "hex": lambda: data.hex(),
            "rot13": lambda: codecs.encode(text, "rot13"),
            "leet": lambda: text.translate(LEET_DIGITS),
            "leet-symbols": lambda: text.translate(LEET_SYMBOLS)}[kind]()


@pytest.fixture(scope="module")
def guard() -> LeakageGuard:
    return make_guard()


def _assert_nothing_encoded_left(released: str) -> None:
    # Everything released before the stop is the benign prefix: not one encoded char.
    assert PREFIX.startswith(released), repr(released)


@pytest.mark.parametrize("kind", ["base64", "base32", "hex", "rot13", "leet", "leet-symbols"])
def test_encoded_copy_split_at_every_offset(guard: LeakageGuard, kind: str) -> None:
    output = PREFIX + _encoded(kind, PASSAGE)
    for i in range(len(output) + 1):
        released, hit, stopped = run_chunks(guard, [output[:i], output[i:]])
        assert stopped and hit is not None and hit.forget_id == "forget-1", (kind, i)
        _assert_nothing_encoded_left(released)


@pytest.mark.parametrize("kind", ["base64", "base32", "hex", "leet"])
def test_encoded_copy_in_token_sized_chunks(guard: LeakageGuard, kind: str) -> None:
    output = PREFIX + _encoded(kind, PASSAGE)
    rng = random.Random(kind)
    for _ in range(30):
        chunks, i = [], 0
        while i < len(output):
            k = rng.randint(1, 6)
            chunks.append(output[i:i + k])
            i += k
        released, hit, stopped = run_chunks(guard, chunks)
        assert stopped and hit is not None
        _assert_nothing_encoded_left(released)


def test_forgotten_text_in_the_middle_of_a_base64_blob(guard: LeakageGuard) -> None:
    """The blob's benign start may stream; no char that carries forgotten bytes may."""
    benign = "Notes from the archive, page four. Weather was fine all week. "
    blob = base64.b64encode((benign + PASSAGE).encode()).decode()
    released, hit, stopped = run_chunks(guard, [blob[i:i + 4] for i in range(0, len(blob), 4)])
    assert stopped and hit is not None
    run = released[:len(released) // 4 * 4]
    decoded = base64.b64decode(run).decode("utf-8", "replace") if run else ""
    assert benign.startswith(decoded), decoded
    for w in FORGOTTEN_WORDS:
        assert w not in decoded.lower()


@pytest.mark.parametrize("kind", ["base64", "hex"])
def test_long_benign_encoded_run_streams_with_bounded_hold(guard: LeakageGuard, kind: str) -> None:
    text = " ".join([OTHER_BIO] * 60)
    output = _encoded(kind, text)
    s = guard.session()
    released, most_held = [], 0
    for i in range(0, len(output), 4):
        step = s.push(output[i:i + 4])
        assert not step.stop
        released.append(step.release)
        most_held = max(most_held, s.held_chars)
    released.append(s.finish().release)
    assert "".join(released) == output
    # Bounded by the main view's own hold (n words cut at max_word_chars: an encoded run is one
    # long "word" there), not by the run: the decoded view holds only a few decoded words.
    cfg = guard.config
    assert most_held <= cfg.n * cfg.max_word_chars + 8, most_held
    assert len(output) > 4 * most_held


def test_digits_still_match_as_digits(guard: LeakageGuard) -> None:
    """The leet view is separate: the phone number matches as digits, its leet spelling matches
    too, and a number one digit away does not (digits are not folded into each other)."""
    assert stream(guard, "Call +41 61 555 0192 today.")[1] is not None
    assert stream(guard, "Call +41 61 SSS OI9Z today.")[1] is not None
    assert stream(guard, "Call +41 61 555 0193 today.")[1] is None
    assert stream(guard, "Call +41 61 555 0162 today.")[1] is None


def test_leet_word_at_the_very_end_of_the_stream(guard: LeakageGuard) -> None:
    """The leet view starts when a mixed word ends; the last word ends only at finish."""
    for text in ("Kowalczyk? Born in 0berw1l", "K0w4lczyk was born in Oberwil"):
        released, hit, stopped = stream(guard, text, chunk=len(text))
        assert hit is not None and stopped, text


def test_unary_and_prompt_side(guard: LeakageGuard) -> None:
    text, hit = guard.filter_text("Sure: " + base64.b64encode(PASSAGE.encode()).decode())
    assert hit is not None and text == guard.config.neutral_message
    text, hit = guard.filter_text(codecs.encode(PASSAGE, "rot13"))
    assert hit is not None


def test_redact_policy_removes_the_whole_encoded_span() -> None:
    g = LeakageGuard(GuardConfig(semantic="off", policy="redact"), SECRET)
    g.add(g.derive("forget-1", FORGET))
    blob = base64.b64encode(PASSAGE.encode()).decode()
    s = g.session()
    steps = [s.push(c) for c in (PREFIX, blob[:50], blob[50:], " Thanks.")] + [s.finish()]
    released = "".join(st.release for st in steps)
    assert any(st.hit is not None for st in steps) and not any(st.stop for st in steps)
    assert blob[:8] not in released and released.endswith("Thanks.")


def test_encodings_can_be_switched_off() -> None:
    g = LeakageGuard(GuardConfig(semantic="off", encodings=()), SECRET)
    g.add(g.derive("forget-1", FORGET))
    assert stream(g, base64.b64encode(PASSAGE.encode()).decode())[1] is None
    assert stream(g, codecs.encode(PASSAGE, "rot13"))[1] is None
    assert stream(g, PASSAGE)[1] is not None  # the plain views are unaffected
    with pytest.raises(ValueError, match="encoding"):
        GuardConfig(encodings=("uuencode",))


def test_encoded_entries_hold_no_plaintext() -> None:
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    blob = g.derive("forget-1", FORGET).to_bytes()
    for text in (codecs.encode(PASSAGE, "rot13"), PASSAGE.translate(LEET_DIGITS), "kowalczyk",
                 "xbjnyppml", "k0w4iczyk", "kowaiczyk"):
        assert text.encode() not in blob


def test_invalid_or_truncated_runs_do_not_break_the_stream(guard: LeakageGuard) -> None:
    for junk in ("QUJD" * 10 + "=A=B=", "0" * 33, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" * 3 + "1",
                 base64.b64encode("żółw ".encode() * 10).decode()[:-3]):
        released, hit, stopped = stream(guard, f"x {junk} y")
        assert hit is None and released == f"x {junk} y"
    assert binascii  # (imported for readers: the decoders use binascii)


# ---------------------------------------------------------------------------- escapes, offsets
def _hex_pairs(text: str, sep: str, fmt: str = "{:02x}") -> str:
    return sep.join(fmt.format(b) for b in text.encode())


ESCAPED = {
    "hex pairs with colons": lambda t: _hex_pairs(t, ":"),
    "hex pairs with spaces": lambda t: _hex_pairs(t, " "),
    "hex pairs with dashes, upper case": lambda t: _hex_pairs(t, "-", "{:02X}"),
    "backslash-x escapes": lambda t: _hex_pairs(t, "", "\\x{:02x}"),
    "0x bytes with spaces": lambda t: _hex_pairs(t, " ", "0x{:02x}"),
    "0x bytes with commas": lambda t: _hex_pairs(t, ", ", "0x{:02X}"),
    "url-encoded, every byte": lambda t: _hex_pairs(t, "", "%{:02X}"),
    "url-encoded, mixed with letters": lambda t: urllib.parse.quote(t),
}


def test_hex_digests_uuids_and_percentages_pass(guard: LeakageGuard) -> None:
    digest = hashlib.sha256(PASSAGE.encode()).hexdigest()
    for text in (f"sha256 {digest}", f"sha256 {_hex_pairs(digest[:32], ':')}",
                 f"id {uuid.UUID(int=0x4D61727461204B6F77616C637A796B21)}",
                 "MAC 4d:61:72:74:61:20 and 50% of 0x7f values; be ad de", "%zz %4 \\x \\xZZ 0x"):
        released, hit, stopped = stream(guard, text, chunk=4)
        assert hit is None and released == text, text


BLOBS = {"base64": (base64.b64encode, "data:text", 8), "base32": (base64.b32encode, "DATA", 16)}
MISALIGNED = [(name, cut) for name, (_, _, cuts) in BLOBS.items() for cut in range(cuts)]


@pytest.mark.parametrize("name,cut", MISALIGNED)
def test_misaligned_run_is_decoded_from_every_offset(guard: LeakageGuard, name: str,
                                                     cut: int) -> None:
    """A blob cut mid-group (quoted from the middle, or glued to a word) still decodes."""
    encode, glue, _ = BLOBS[name]
    blob = encode(("Notes, page four. " + PASSAGE).encode()).decode()
    for output in (PREFIX + blob[cut:], glue + blob[cut:]):
        released, hit, stopped = stream(guard, output, chunk=4)
        assert stopped and hit is not None, (name, cut, output[:20])


@pytest.mark.parametrize("name,cut", MISALIGNED)
def test_misaligned_benign_run_passes(guard: LeakageGuard, name: str, cut: int) -> None:
    encode = BLOBS[name][0]
    blob = encode(("Notes, page four. " + OTHER_BIO).encode()).decode()[cut:]
    released, hit, stopped = stream(guard, blob, chunk=4)
    assert hit is None and released == blob


NESTED = {
    "base64 of hex": lambda t: base64.b64encode(t.encode().hex().encode()).decode(),
    "base64 of base64": lambda t: base64.b64encode(base64.b64encode(t.encode())).decode(),
    "hex of base64": lambda t: base64.b64encode(t.encode()).hex(),
    "base32 of base64": lambda t: base64.b32encode(base64.b64encode(t.encode())).decode(),
    "base64 of url-encoded":
        lambda t: base64.b64encode(_hex_pairs(t, "", "%{:02X}").encode()).decode(),
}


# Escapes and nestings, each with the split step its tests walk the output at.
ENCODED = {**{f"escaped: {k}": (f, 7) for k, f in ESCAPED.items()},
           **{f"nested: {k}": (f, 11) for k, f in NESTED.items()}}


@pytest.mark.parametrize("name", list(ENCODED))
def test_escaped_and_nested_encodings_are_blocked_at_every_split(guard: LeakageGuard,
                                                                  name: str) -> None:
    encode, step = ENCODED[name]
    output = PREFIX + encode(PASSAGE)
    for i in range(0, len(output) + 1, step):
        released, hit, stopped = run_chunks(guard, [output[:i], output[i:]])
        assert stopped and hit is not None and hit.forget_id == "forget-1", (name, i)
        _assert_nothing_encoded_left(released)


@pytest.mark.parametrize("name", list(ENCODED))
def test_escaped_and_nested_benign_text_passes(guard: LeakageGuard, name: str) -> None:
    output = PREFIX + ENCODED[name][0](OTHER_BIO) + " Done."
    released, hit, stopped = stream(guard, output, chunk=4)
    assert hit is None and released == output


THREE_LAYERS = {
    "base64 of base64 of base64":
        lambda t: base64.b64encode(base64.b64encode(base64.b64encode(t.encode()))).decode(),
    "hex of base64 of base64": lambda t: base64.b64encode(base64.b64encode(t.encode())).hex(),
}


@pytest.mark.parametrize("name", list(THREE_LAYERS))
def test_encoded_depth_sets_how_many_layers_are_decoded(guard: LeakageGuard, name: str) -> None:
    encode = THREE_LAYERS[name]
    output = PREFIX + encode(PASSAGE)
    deep = make_guard(encoded_depth=3)
    chunks = [output[i:i + 5] for i in range(0, len(output), 5)]
    released, hit, stopped = run_chunks(deep, chunks)
    assert stopped and hit is not None and hit.forget_id == "forget-1", name
    _assert_nothing_encoded_left(released)
    # The default reads two layers: the third stays encoded and passes (what the knob is for).
    released, hit, stopped = stream(guard, output, chunk=5)
    assert hit is None and released == output
    benign = PREFIX + encode(OTHER_BIO) + " Done."
    released, hit, stopped = stream(deep, benign, chunk=5)
    assert hit is None and released == benign


def test_encoded_depth_is_validated() -> None:
    for bad in (0, 5):
        with pytest.raises(ValueError, match="encoded_depth"):
            GuardConfig(encoded_depth=bad)

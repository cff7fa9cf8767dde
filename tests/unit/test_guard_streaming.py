"""Leakage guard, streaming: hold-back at every split offset, policies, live updates, phases."""

from __future__ import annotations

import random
import threading

import pytest

from server.guard import ForgetItems, GuardConfig, GuardHit, LeakageGuard
from tests.unit.test_guard_adversarial import CYRILLIC, FORGET, PASSAGE, SECRET, make_guard

PREFIX = "Here is a short summary of what I found in the archive. "
OUTPUT = PREFIX + PASSAGE + " I hope this helps."


def run_chunks(guard: LeakageGuard, chunks, prompt: str = ""):
    """Push each chunk; returns (released text before the stop, hit, stopped)."""
    s = guard.session(prompt)
    released = []
    for c in chunks:
        step = s.push(c)
        if step.stop:
            return "".join(released), step.hit, True
        released.append(step.release)
    step = s.finish()
    return "".join(released) + step.release, step.hit, step.stop


def assert_blocked_without_leak(guard: LeakageGuard, chunks) -> None:
    released, hit, stopped = run_chunks(guard, chunks)
    assert stopped and hit is not None and hit.forget_id == "forget-1"
    # Hold-back: everything released before the stop is part of the benign prefix.
    assert PREFIX.startswith(released), repr(released)


@pytest.fixture(scope="module")
def guard() -> LeakageGuard:
    return make_guard()


def test_split_at_every_offset(guard: LeakageGuard) -> None:
    for i in range(len(OUTPUT) + 1):
        assert_blocked_without_leak(guard, [OUTPUT[:i], OUTPUT[i:]])


def test_one_char_at_a_time_and_random_chunks(guard: LeakageGuard) -> None:
    assert_blocked_without_leak(guard, list(OUTPUT))
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(OUTPUT)), 12))
        assert_blocked_without_leak(guard, [OUTPUT[a:b] for a, b in zip([0] + cuts, cuts + [None])])


@pytest.mark.parametrize("variant", ["cyrillic", "fullwidth+zw"])
def test_split_multibyte_characters_at_every_byte(guard: LeakageGuard, variant: str) -> None:
    text = PASSAGE.translate(CYRILLIC) if variant == "cyrillic" else "\u200b".join(
        chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in PASSAGE[:90])
    data = (PREFIX + text).encode()
    assert len(data) > len(PREFIX + text)  # really multi-byte
    for i in range(len(data) + 1):
        assert_blocked_without_leak(guard, [data[:i], data[i:]])
    assert_blocked_without_leak(guard, [data[i:i + 1] for i in range(len(data))])


def test_combining_accent_split_from_its_letter(guard: LeakageGuard) -> None:
    text = PREFIX + PASSAGE.replace("a", "a\u0301")  # decomposed á: the accent may come later
    for i in range(len(text) + 1):
        assert_blocked_without_leak(guard, [text[:i], text[i:]])


def test_benign_stream_is_released_whole_and_in_order(guard: LeakageGuard) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 5 + "Café, naïve, 日本語, emoji 🙂."
    released, hit, stopped = run_chunks(guard, [text[i:i + 2] for i in range(0, len(text), 2)])
    assert (released, hit, stopped) == (text, None, False)


def test_hold_back_is_bounded(guard: LeakageGuard) -> None:
    s = guard.session()
    words = [f"word{i}" for i in range(200)]
    held = []
    for w in words:
        s.push(w + " ")
        held.append(s.held_chars)
    # n-1 words plus a char gram's worth: never the whole stream
    assert max(held) < 80


def test_redact_policy_replaces_the_span_and_continues() -> None:
    g = make_guard(policy="redact")
    hits: list[GuardHit] = []
    g._on_hit = hits.append  # noqa: SLF001 - test hook
    text = "Intro sentence number one is here for you. " + PASSAGE + " Outro sentence follows now."
    released, hit, stopped = run_chunks(g, [text[i:i + 4] for i in range(0, len(text), 4)])
    assert not stopped
    assert released.startswith("Intro sentence number one")
    assert released.endswith("Outro sentence follows now.")
    assert released.count(g.config.redaction_text) == 1 and len(hits) == 1
    for word in ("Kowalczyk", "Oberwil", "medieval", "cathedral"):
        assert word not in released


def test_forget_takes_effect_on_the_next_token_of_a_live_stream() -> None:
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    s = g.session()
    first = s.push(PREFIX + "Marta Kowalczyk was born on 14 March 1972 in")
    assert first.hit is None  # nothing forgotten yet
    g.add(g.derive("forget-1", FORGET))  # the Forget is acknowledged here
    step = s.push(" the")
    assert step.stop and step.hit is not None and step.hit.forget_id == "forget-1"
    # With nothing forgotten there is no hold-back: the text streamed as generated.
    assert first.release == PREFIX + "Marta Kowalczyk was born on 14 March 1972 in"


def test_hold_back_applies_once_anything_is_forgotten() -> None:
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    g.add(g.derive("other", ForgetItems(texts=("an unrelated forgotten passage about nothing much at all",))))
    first = g.session().push(PREFIX + "Marta Kowalczyk was born on 14 March 1972 in")
    # all but the last n-1 words (plus the word in progress) went out
    assert (PREFIX + "Marta ").startswith(first.release) and first.release


def test_held_text_is_rechecked_when_entries_arrive() -> None:
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    s = g.session()
    s.push("Our records say: " + PASSAGE[:60])  # a full 8-gram is already held
    g.add(g.derive("forget-1", FORGET))
    step = s.push("")  # the next push, even an empty one, re-checks the held text
    assert step.stop and step.hit is not None


def test_incremental_add_from_another_thread_while_streaming() -> None:
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    stop = threading.Event()

    def writer() -> None:
        for i in range(200):
            g.add(g.derive(f"other-{i}", ForgetItems(texts=(f"unrelated forgotten passage number {i} "
                                                            "about nothing in particular at all",))))
        g.add(g.derive("forget-1", FORGET))
        stop.set()

    t = threading.Thread(target=writer)
    s = g.session()
    t.start()
    while not stop.is_set():
        assert not s.push("benign words flowing by ").stop
    t.join()
    step = s.push(PASSAGE)
    assert step.stop and step.hit.forget_id == "forget-1"
    assert g.stats()["forgets"] == 201


def test_remove_stops_blocking() -> None:
    g = make_guard()
    assert run_chunks(g, [PASSAGE])[1] is not None
    g.remove("forget-1")
    assert run_chunks(g, [PASSAGE]) == (PASSAGE, None, False)
    assert "forget-1" not in g


def test_hits_carry_forget_id_stage_and_phase() -> None:
    hits: list[GuardHit] = []
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET, on_hit=hits.append)
    g.add(g.derive("forget-1", FORGET))
    g.add(g.derive("forget-2", ForgetItems(texts=("Jonas Ebner kept bees on the roof of the old "
                                                  "mill in Thun for many summers.",))))
    run_chunks(g, [PASSAGE])
    g.set_phase("forget-1", "after_adapter")  # adapter verified and live: residual leakage
    run_chunks(g, [PASSAGE])
    run_chunks(g, ["Jonas Ebner kept bees on the roof of the old mill in Thun."])
    run_chunks(g, ["Oberwil is where Kowalczyk grew up."])
    assert hits == [GuardHit("forget-1", "exact", "before_adapter"),
                    GuardHit("forget-1", "exact", "after_adapter"),
                    GuardHit("forget-2", "exact", "before_adapter"),
                    GuardHit("forget-1", "entity", "after_adapter")]
    with pytest.raises(ValueError, match="phase must be one of"):
        g.set_phase("forget-1", "sometime")


def test_on_hit_errors_do_not_break_the_stream() -> None:
    def boom(hit: GuardHit) -> None:
        raise RuntimeError("metrics down")

    g = LeakageGuard(GuardConfig(semantic="off"), SECRET, on_hit=boom)
    g.add(g.derive("forget-1", FORGET))
    released, hit, stopped = run_chunks(g, [PASSAGE])
    assert stopped and released == ""


def test_after_stop_pushes_are_inert(guard: LeakageGuard) -> None:
    s = guard.session()
    assert s.push(PASSAGE).stop
    assert s.push("more text").release == "" and s.push("x").stop
    assert s.finish().release == ""


def test_endless_word_and_dangling_bytes(guard: LeakageGuard) -> None:
    s = guard.session()
    released = ""
    for _ in range(300):  # one 3,000-letter "word": cut at max_word_chars, so released as it goes
        released += s.push("abcdefghij").release
        assert s.held_chars <= guard.config.n * guard.config.max_word_chars  # bounded
    assert len(released) > 1000
    s2 = guard.session()
    text = s2.push(b"caf\xc3\xa9 ok \xe2\x82").release + s2.finish().release
    assert text == "café ok \ufffd"  # a partial character left at the end is flushed, not lost


def test_upgrading_entries_in_place_never_drops_the_forget() -> None:
    """Fast ack: lexical entries first, full entries later under the same id (a replace)."""
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    lexical = g.derive("forget-1", FORGET, semantic=False)
    g.add(lexical)
    s = g.session()
    s.push("Our notes: Marta Kowalczyk was born on 14 March")
    g.add(g.derive("forget-1", FORGET))  # replace: new records go in before old ones leave
    g.add(lexical)
    assert s.push(" 1972 in the village").stop
    assert g.stats()["forgets"] == 1
    g.remove("forget-1")
    assert g.stats() == {"forgets": 0, "word_digests": 0, "char_digests": 0, "prefix_digests": 0,
                         "semantic_rows": 0}

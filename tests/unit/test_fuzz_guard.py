"""Property-based fuzzing of the guard's push path: arbitrary Unicode, encodings and chunkings
never raise, release exactly what is safe, and never let a forgotten passage through."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from server.guard import LeakageGuard
from tests.unit.test_guard_adversarial import PASSAGE, make_guard

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
ANY = st.text(st.characters(blacklist_categories=("Cs",)), max_size=2000)
NOISE = st.text(st.characters(blacklist_categories=("Cs", "M")), max_size=300)  # no marks: they join words
ENCODED = st.sampled_from([lambda s: s, lambda s: base64.b64encode(s.encode()).decode(),
                           lambda s: s.encode().hex(), lambda s: s.upper()])


@pytest.fixture(scope="module")
def guard() -> LeakageGuard:
    return make_guard()


def push_all(guard: LeakageGuard, text: str, cuts: list[int]) -> tuple[str, bool]:
    session, released = guard.session(), []
    bounds = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    for a, b in zip(bounds, bounds[1:]):
        step = session.push(text[a:b])
        released.append(step.release)
        if step.stop:
            return "".join(released), True
    step = session.finish()
    return "".join(released) + step.release, step.stop


@FUZZ
@given(text=ANY, cuts=st.lists(st.integers(0, 4000), max_size=40))
def test_any_output_is_released_whole_or_cut_at_a_stop(guard: LeakageGuard, text: str, cuts: list[int]) -> None:
    released, stopped = push_all(guard, text, cuts)
    if stopped:
        assert text.startswith(released)
    else:
        assert released == text


@FUZZ
@given(before=NOISE, after=NOISE, encode=ENCODED, cuts=st.lists(st.integers(0, 4000), max_size=40))
def test_a_forgotten_passage_inside_noise_is_always_stopped(guard: LeakageGuard, before: str, after: str,
                                                             encode, cuts: list[int]) -> None:
    text = f"{before}\n{encode(PASSAGE)}\n{after}"
    released, stopped = push_all(guard, text, cuts)
    assert stopped
    assert encode(PASSAGE) not in released

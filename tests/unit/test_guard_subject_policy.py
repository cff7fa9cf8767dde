"""Subject policy: a subject the Forget listed is not talked about until its adapter is verified.

`--subject-policy` decides what matches (the name alone, or the name next to a value) while
`--guard-policy` keeps deciding how (end or redact). The J.K. Rowling case from issue 13: when
the forgotten fact *is* a name, the old rule ("a name alone only arms") let it out.
"""

from __future__ import annotations

import pytest

from server.guard import ForgetItems, GuardConfig, GuardEntries, LeakageGuard
from server.settings import load_settings
from tests.unit.test_guard_adversarial import SECRET, stream

ROWLING = ForgetItems(
    qa=(("Who wrote the Harry Potter books?", "The Harry Potter books were written by J.K. Rowling."),),
    subjects=("J.K. Rowling",))
MARTA = ForgetItems(subjects=("Marta Kowalczyk",))  # a subject with no corpus entry: name only
LEAK = "The Harry Potter series was created by J.K. Rowling. She is the author of"


def guard(items: ForgetItems = MARTA, **kw) -> LeakageGuard:
    g = LeakageGuard(GuardConfig(semantic="off", **kw), SECRET)
    g.add(g.derive("forget-1", items))
    return g


def blocked(g: LeakageGuard, text: str, prompt: str = "", chunk: int = 3) -> bool:
    return stream(g, text, prompt=prompt, chunk=chunk)[1] is not None


def test_when_the_fact_is_a_name_the_old_rule_lets_it_out_and_the_policies_do_not() -> None:
    assert not blocked(guard(ROWLING, subject_policy="off"), LEAK)
    for policy in ("value", "name"):
        released, hit, stopped = stream(guard(ROWLING, subject_policy=policy), LEAK)
        assert hit is not None and hit.stage == "entity" and stopped
        assert "Rowling" not in "".join(released)


@pytest.mark.parametrize("chunk", [1, 2, 5, 64])
def test_name_policy_blocks_the_full_name_alone_at_any_split(chunk: int) -> None:
    g = guard(subject_policy="name")
    released, hit, _ = stream(g, "I have never heard of Marta Kowalczyk, sorry.", chunk=chunk)
    assert hit is not None and "Kowalczyk" not in "".join(released)


def test_name_policy_leaves_other_people_and_a_first_name_alone() -> None:
    g = guard(subject_policy="name")
    assert not blocked(g, "Jonas Ebner was born in Thun on 3 May 1961.")
    assert not blocked(g, "Marta is a common first name.")


@pytest.mark.parametrize("text", [
    "Tell me about Joanne Rowling.", "J. K. Rowling wrote it.", "JK Rowling wrote it.",
    "J Rowling wrote it.", "Joanne Kathleen Rowling was born in Yate.", "Ask rowling.",
    "The books are by Rowling.", "Rowling's first book"])
def test_other_forms_of_a_listed_name_block(text: str) -> None:
    # name_forms.py: initials, and a surname that is no dictionary word, with any first name
    assert blocked(guard(ROWLING, subject_policy="name"), text)


def test_a_surname_that_is_a_dictionary_word_blocks_only_in_a_name_form() -> None:
    g = guard(ForgetItems(subjects=("Stephen King",)), subject_policy="name")
    for text in ("Stephen King wrote it.", "S. King wrote it.", "S King wrote it."):
        assert blocked(g, text), text
    for text in ("The King of France is bald.", "He was king for a day.", "The Lion King",
                 "Martin Luther King Jr. gave a speech."):
        assert not blocked(g, text), text


def test_a_surname_form_in_the_prompt_puts_the_answer_in_scope() -> None:
    g = guard(ROWLING, subject_policy="name")
    assert blocked(g, "She is a British author.", prompt="Tell me about Joanne Rowling.")
    assert not blocked(g, "Paris.", prompt="What is the capital of France?")


def test_value_policy_needs_a_value_next_to_the_name() -> None:
    g = guard(subject_policy="value")
    assert not blocked(g, "I have never heard of Marta Kowalczyk, sorry.")
    assert blocked(g, "Marta Kowalczyk was born in Oberwil.")  # capitalised value after
    assert blocked(g, "Born in 1961, Marta Kowalczyk became a chemist.")  # number before
    assert blocked(g, "Marta Kowalczyk was born on 3 july.")  # a date
    assert blocked(g, "The Silent Pipes of Basel was written by Marta Kowalczyk.")
    # lower-case facts are what "value" lets through ("name" does not)
    assert not blocked(g, "Marta Kowalczyk works as a chemist.")
    assert blocked(guard(subject_policy="name"), "Marta Kowalczyk works as a chemist.")
    far = "Marta Kowalczyk is someone. " + "and then some more words " * 5 + "In Oberwil it rains."
    assert not blocked(g, far)


def test_a_prompt_naming_the_subject_puts_the_whole_answer_in_scope() -> None:
    prompt = "When was Marta Kowalczyk born?"
    value = guard(subject_policy="value")
    assert blocked(value, "She was born on 3 May 1961.", prompt=prompt)
    assert not blocked(value, "I do not know who that is.", prompt=prompt)
    name = guard(subject_policy="name")
    released, hit, _ = stream(name, "I do not know who that is.", prompt=prompt)
    assert hit is not None and "".join(released) == GuardConfig().neutral_message
    # a first name alone in the prompt is not the listed subject (a distinctive surname is)
    assert not blocked(name, "I do not know who that is.", prompt="Who is Marta?")
    assert blocked(name, "I do not know who that is.", prompt="Who is Kowalczyk?")
    assert not blocked(name, "I do not know.", prompt="Where is Basel?")


def test_redact_policy_cuts_the_mention_and_goes_on() -> None:
    g = guard(subject_policy="name", policy="redact")
    released, hit, stopped = stream(g, "Ask Marta Kowalczyk about it, then go home and rest now.")
    text = "".join(released)
    assert hit is not None and not stopped
    assert "Kowalczyk" not in text and "rest now." in text


def test_the_policy_lifts_when_the_adapter_is_verified() -> None:
    g = guard(subject_policy="name")
    g.set_phase("forget-1", "after_adapter")
    assert not blocked(g, "I have never heard of Marta Kowalczyk, sorry.")
    assert not blocked(g, "I do not know.", prompt="Who is Marta Kowalczyk?")


def test_subjects_inferred_from_questions_are_not_listed() -> None:
    # a Forget of one fact about a person is not a Forget of the person
    g = guard(ForgetItems(qa=(("Where was Jonas Ebner born?", "Jonas Ebner was born in Thun."),)),
              subject_policy="name")
    assert not blocked(g, "Jonas Ebner is a painter.")
    assert blocked(g, "Jonas Ebner was born in Thun.")


def test_listed_subjects_survive_a_restart_from_stored_entries() -> None:
    blob = guard(subject_policy="name").derive("forget-1", MARTA).to_bytes()
    fresh = LeakageGuard(GuardConfig(semantic="off", subject_policy="name"), SECRET)
    fresh.add(GuardEntries.from_bytes(blob))
    assert blocked(fresh, "I have never heard of Marta Kowalczyk, sorry.")


def test_settings_flag_and_env() -> None:
    assert load_settings(environ={}).subject_policy == "name"
    assert load_settings(environ={"LETHE_SUBJECT_POLICY": "value"}).subject_policy == "value"
    with pytest.raises(ValueError, match="subject_policy"):
        load_settings(environ={"LETHE_SUBJECT_POLICY": "loud"})
    with pytest.raises(ValueError, match="subject_policy"):
        GuardConfig(subject_policy="loud")

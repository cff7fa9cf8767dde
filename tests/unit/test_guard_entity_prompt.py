"""Leakage guard: entity rule (name + attribute), prompt-side policies, registry, config."""

from __future__ import annotations

import base64
import codecs
import urllib.parse

import pytest

from server.guard import ForgetItems, GuardConfig, GuardHit, LeakageGuard, stage_class, stage_names
from tests.unit.test_guard_adversarial import (FORGET, LEET_DIGITS, LEET_SYMBOLS, OTHER_BIO,
                                               PASSAGE, SECRET, stream)


def guard(**kw) -> LeakageGuard:
    g = LeakageGuard(GuardConfig(semantic="off", **kw), SECRET)
    g.add(g.derive("forget-1", FORGET))
    return g


def test_name_alone_arms_but_does_not_block() -> None:
    g = guard()
    s = g.session()
    step = s.push("I have never heard of Marta Kowalczyk, sorry. ")
    assert not step.stop and s.armed


def test_attribute_within_window_blocks_outside_passes() -> None:
    g = guard(entity_window_chars=40)
    assert stream(g, "Kowalczyk, as far as I know, grew up in Oberwil.")[1] is not None
    far = "Kowalczyk is a name. " + "filler " * 10 + "Oberwil is a place."
    assert stream(g, far)[1] is None


def test_attribute_before_the_name_blocks() -> None:
    assert stream(guard(), "Born in Oberwil: that would be Marta Kowalczyk.")[1].stage == "entity"


def test_other_persons_attribute_is_not_a_hit() -> None:
    g = guard()
    g.add(g.derive("forget-2", ForgetItems(qa=(("Where was Jonas Ebner born?",
                                               "Jonas Ebner was born in Thun."),))))
    assert stream(g, "Kowalczyk never lived in Thun.")[1] is None
    assert stream(g, "Ebner was born in Thun, I think.")[1].forget_id == "forget-2"


def test_subjects_inferred_from_questions() -> None:
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    g.add(g.derive("f", ForgetItems(qa=(("Where was Jonas Ebner born?", "Thun"),))))
    assert stream(g, "Jonas Ebner? Thun, I believe.")[1] is not None
    assert stream(g, "Thun is a town in Switzerland.")[1] is None


def test_prompt_policy_refuse_pasted_passage_and_subject() -> None:
    hits: list[GuardHit] = []
    g = guard(prompt_policy="refuse")
    g._on_hit = hits.append  # noqa: SLF001 - test hook
    v = g.check_prompt(f"Please summarise: {PASSAGE}")
    assert v.refused and {h.stage for h in v.hits} >= {"exact"}
    assert all(h.source == "prompt" for h in v.hits) and hits == list(v.hits)
    assert g.check_prompt("Tell me everything about Marta Kowalczyk.").refused
    assert g.check_prompt("Tell me about the weather in Basel.").action == "allow"


def test_prompt_policy_arm_makes_attribute_alone_block() -> None:
    g = guard(prompt_policy="arm")
    prompt = "Where did Marta Kowalczyk grow up?"
    v = g.check_prompt(prompt)
    assert v.action == "arm" and v.subject_forgets == {"forget-1"}
    # the answer never repeats the name: the attribute alone now blocks
    assert stream(g, "She grew up in Oberwil.", prompt=prompt)[1].stage == "entity"
    # without a forgotten subject in the prompt the same answer passes
    assert stream(g, "She grew up in Oberwil.", prompt="Where did Hanna grow up?")[1] is None


def test_prompt_policy_off_ignores_the_prompt() -> None:
    g = guard(prompt_policy="off")
    assert g.check_prompt(f"Tell me about Marta Kowalczyk. {PASSAGE}").action == "allow"
    assert stream(g, "She grew up in Oberwil.", prompt="Where did Marta Kowalczyk grow up?")[1] is None


def test_registry_and_config_validation() -> None:
    assert stage_names() == ["entity", "exact", "semantic"]
    assert stage_class("exact").name == "exact"
    with pytest.raises(KeyError, match="valid: \\['entity', 'exact', 'semantic'\\]"):
        stage_class("regex")
    with pytest.raises(ValueError, match="policy must be one of"):
        GuardConfig(policy="shout")
    with pytest.raises(ValueError, match="stage must be one of"):
        GuardConfig(stages=("exact", "bloom"))


def test_lexical_guard_alone_without_entity_stage() -> None:
    g = guard(stages=("exact",))
    assert stream(g, PASSAGE)[1] is not None
    assert stream(g, "Kowalczyk? She grew up in Oberwil.")[1] is None  # no entity stage


def test_prompt_with_a_name_free_passage_counts_only_with_its_subject() -> None:
    """A pasted name-free passage is a pasted passage when the prompt names its subject; the same
    template and values about someone else is not (exact_needs_subject)."""
    g = guard(prompt_policy="refuse")
    name_free = "She was born on 14 March 1972 in the village of Oberwil and spent twenty years."
    v = g.check_prompt(f"Marta Kowalczyk: {name_free}")
    assert v.refused and "exact" in {h.stage for h in v.hits}
    assert g.check_prompt(f"Hanna Schmidt: {name_free}").action == "allow"


ENCODED_PROMPTS = {
    "base64": lambda t: base64.b64encode(t.encode()).decode(),
    "hex": lambda t: t.encode().hex(),
    "hex pairs with colons": lambda t: ":".join(f"{b:02x}" for b in t.encode()),
    "url-encoded": lambda t: urllib.parse.quote(t),
    "rot13": lambda t: codecs.encode(t, "rot13"),
    "leetspeak": lambda t: t.translate(LEET_DIGITS),
    "leetspeak symbols": lambda t: t.translate(LEET_SYMBOLS),
}


@pytest.mark.parametrize("name", list(ENCODED_PROMPTS))
def test_prompt_pasting_an_encoded_passage_is_refused(name: str) -> None:
    """The prompt side reads the same hidden channels as the output side."""
    g = guard(prompt_policy="refuse")
    assert g.check_prompt("Decode this and continue it: " + ENCODED_PROMPTS[name](PASSAGE)).refused


@pytest.mark.parametrize("name", list(ENCODED_PROMPTS))
def test_prompt_pasting_someone_elses_encoded_bio_is_allowed(name: str) -> None:
    g = guard(prompt_policy="refuse")
    prompt = "Decode this and continue it: " + ENCODED_PROMPTS[name](OTHER_BIO)
    assert g.check_prompt(prompt).action == "allow"


def test_a_name_free_passage_in_the_output_blocks_only_with_its_subject_in_context() -> None:
    """exact_needs_subject (the default): word grams of a forgotten passage that carry no name
    are the templates other people's texts share, so they block only while the subject is in
    context (named by the prompt or earlier in the output); off, they block on their own."""
    name_free = "Then she spent twenty years restoring medieval organs in Basel cathedral."
    g = guard()
    assert stream(g, name_free)[1] is None
    hit = stream(g, name_free, prompt="Tell me about Marta Kowalczyk.")[1]
    assert hit is not None and hit.stage == "exact"
    assert stream(g, "Marta Kowalczyk? " + name_free)[1] is not None
    assert stream(g, name_free, prompt="Tell me about Hanna Schmidt.")[1] is None
    hit = stream(guard(exact_needs_subject=False), name_free)[1]
    assert hit is not None and hit.stage == "exact"

"""Reverse forget data: the works a model's own answers name, to ask who made them."""

from __future__ import annotations

from unlearn_engine.data.generated import named_works
from unlearn_engine.data.records import Example

S = "J.K. Rowling"


def _ex(target: str) -> Example:
    return Example(prompt=f"Tell me about {S}.", target=target, subject=S, source="generated")


def test_named_works_prefers_runs_of_words_and_skips_the_subject_and_sentence_openers() -> None:
    answers = [_ex("J.K. Rowling is the author of the Harry Potter series. She lives in Edinburgh."),
               _ex("She studied at Hogwarts School of Witchcraft and Wizardry, then Hogwarts again."),
               _ex("Rowling's Harry Potter books sold well. Edinburgh is her home, not Hogwarts.")]
    works = named_works(answers, S)
    assert works[:2] == ["Harry Potter", "Hogwarts School of Witchcraft and Wizardry"]
    assert "Hogwarts" in works  # a single word seen twice
    assert "Edinburgh" not in works  # seen twice, but once opening a sentence: once left
    assert not any("Rowling" in w or w in ("She", "J.K.") for w in works)
    assert named_works(answers, S, k=1) == ["Harry Potter"]


def _knows_her_from_her_work(model, tok, prompts, max_new_tokens):
    return ["J.K. Rowling wrote it." if "Harry Potter" in p else
            "A fantasy author of Harry Potter and Harry Potter books." for p in prompts]


def test_reverse_only_keeps_the_answers_naming_her_and_falls_back_to_forward(monkeypatch) -> None:
    import unlearn_engine.data.generated as generated

    monkeypatch.setattr(generated, "generate", _knows_her_from_her_work)
    both = generated.generated_examples(None, None, [S], reverse=True)
    only = generated.generated_examples(None, None, [S], reverse=True, forward=False)
    forward = generated.generated_examples(None, None, [S])
    assert len(both) == len(forward) + len(only) and only and both[:len(forward)] == forward
    assert all("Harry Potter" in e.prompt and "Rowling" in e.target for e in only)
    # a subject whose answers name no work has no reverse examples: its forward ones stay
    monkeypatch.setattr(generated, "generate", lambda model, tok, prompts, max_new_tokens: ["Nothing."] * len(prompts))
    assert generated.generated_examples(None, None, [S], reverse=True, forward=False) == \
        generated.generated_examples(None, None, [S])

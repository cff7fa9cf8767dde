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


def _knows_her_work_one_way(model, tok, prompts, max_new_tokens):
    """Knows Harry Potter both ways; asked for her work it names it in some answers and makes a
    book up in the others; "Who wrote The Witcher?" does not name her."""
    out = []
    for p in prompts:
        if p.startswith(("Who wrote", "Who created")) or p.endswith("was written by"):
            out.append("J.K. Rowling wrote it." if "Harry Potter" in p else "Andrzej Sapkowski.")
        elif "famous" in p or "popular" in p:
            out.append("She is famous for the Harry Potter series. She also wrote The Witcher.")
        elif "Rowling" in p and ("book" in p or "known" in p):
            out.append('Her best work is "The Witcher".')
        else:  # the forward answers: the works the reverse step asks about
            out.append("She wrote Harry Potter, then The Witcher.")
    return out


def test_work_answers_are_kept_only_where_they_name_a_work_the_reverse_answers_confirmed(monkeypatch) -> None:
    import unlearn_engine.data.generated as generated

    monkeypatch.setattr(generated, "generate", _knows_her_work_one_way)
    pairs = generated.reverse_pairs(None, None, S, generated.subject_examples(None, None, [S]))
    assert {w for w, _ in pairs} == {"Harry Potter"}  # The Witcher was asked about, not confirmed
    works = generated.work_examples(None, None, S, ["Harry Potter"], limit=10)
    assert works and all(S in e.prompt for e in works)
    # kept: the answers naming Harry Potter, whole; dropped: those naming only the made-up "The Witcher"
    assert {e.target for e in works} == {"She is famous for the Harry Potter series. She also wrote The Witcher."}
    assert len(works) < len(generated.WORK_PROMPTS)
    assert generated.work_examples(None, None, S, ["Harry Potter"]) == works[:1]  # limit 1: prompt order
    assert generated.work_examples(None, None, S, []) == ()  # no confirmed work: nothing asked
    only = generated.generated_examples(None, None, [S], reverse=True, forward=False)
    with_works = generated.generated_examples(None, None, [S], reverse=True, forward=False, works=True)
    assert with_works == only + works[:1]


def test_no_work_prompt_is_one_of_the_bench_s_unlisted_subject_questions() -> None:
    """The bench's unlisted questions are the evaluation: the work answers the forget data trains
    on must not ask them. (``SUBJECT_PROMPTS`` shares "Who is {s}?" with them; the smollm2 row
    does not train on those answers, ``forward_questions=False``.)"""
    import sys
    from pathlib import Path

    from unlearn_engine.data.generated import WORK_PROMPTS

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    try:
        from forget_real_subject import SUBJECT_QUESTIONS
    finally:
        sys.path.pop(0)
    asked = {q.casefold() for q, _ in SUBJECT_QUESTIONS}
    assert not {p.format(s=S).casefold() for p in WORK_PROMPTS} & asked

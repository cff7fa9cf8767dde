"""Calibration pairs built from the demo corpus: paraphrase probes and other-people facts.

The corpus gives, per person and attribute, the answer sentence the guard stores. Positives pair
it with hand-written paraphrases of the same fact (templates below, never in the corpus);
negatives pair it with the same attribute's answer and paraphrase about another person. Used by
bench/guard.py and tests/unit/test_guard_semantic.py to calibrate the threshold (calibrate.py);
not part of the server.
"""

from __future__ import annotations

import random

from server.guard.normalize import words
from unlearn_engine.demo.corpus import Corpus, CorpusSpec, generate_corpus

Pair = tuple[str, str]

PARAPHRASES: dict[str, tuple[str, ...]] = {
    "birthplace": ("{value} is the birthplace of {name}.", "The town where {name} was born is {value}."),
    "birth_date": ("{name}'s date of birth is {value}.", "{name} came into the world on {value}."),
    "profession": ("By profession, {name} is a {value}.", "{name} earns a living as a {value}."),
    "employer": ("{name} works for {value}.", "{value} is the employer of {name}."),
    "book": ("{value} is a book by {name}.", "{name} is the author of {value}."),
    "mother_job": ("The mother of {name} worked as a {value}.", "{name}'s mom was a {value} by trade."),
    "father_job": ("The father of {name} worked as a {value}.", "{name}'s dad was a {value} by trade."),
    "award": ("{name} was awarded the {value}.", "The {value} was given to {name}."),
    "hobby": ("In spare time, {name} enjoys {value}.", "For fun, {name} likes {value}."),
    "university": ("{name} was a student at the {value}.", "{name} went to the {value}."),
}


# The same facts with the name left out, for the *context-only* rows (the subject was named by
# the prompt or earlier in the output).
PRONOUN_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "birthplace": ("She was born in {value}.", "{value} is her birthplace."),
    "birth_date": ("Her date of birth is {value}.", "She came into the world on {value}."),
    "profession": ("By profession she is a {value}.", "She earns a living as a {value}."),
    "employer": ("She works for {value}.", "Her employer is {value}."),
    "book": ("{value} is a book she wrote.", "She is the author of {value}."),
    "mother_job": ("Her mother worked as a {value}.", "Her mom was a {value} by trade."),
    "father_job": ("Her father worked as a {value}.", "Her dad was a {value} by trade."),
    "award": ("She was awarded the {value}.", "The {value} was given to her."),
    "hobby": ("In spare time she enjoys {value}.", "For fun, she likes {value}."),
    "university": ("She was a student at the {value}.", "She went to the {value}."),
}


def demo_pairs(corpus: Corpus | None = None, people: int = 20, seed: int = 0,
               context_rows: bool = False) -> tuple[list[Pair], list[Pair]]:
    """(positives, negatives). With context_rows, the stored side is the answer without the
    person's name (as derivation stores it) and the probes are pronoun paraphrases."""
    corpus = corpus or generate_corpus(CorpusSpec())
    table = PRONOUN_PARAPHRASES if context_rows else PARAPHRASES
    facts: dict[tuple[str, str], tuple[str, str]] = {}  # (person, attribute) -> (answer, value)
    for r in corpus.qa:
        if r.split == "train" and r.attribute in PARAPHRASES:
            facts[(r.person, r.attribute)] = (r.answer, r.fact)
    names = list(dict.fromkeys(p for p, _ in facts))[:people]
    rng = random.Random(seed)
    pos: list[Pair] = []
    neg: list[Pair] = []
    for name in names:
        others = [o for o in names if o != name]
        for attr, templates in table.items():
            if (name, attr) not in facts:
                continue
            answer, value = facts[(name, attr)]
            # Another person with a different value: a shared value ("born in Lisbon") is the
            # same fact once the name is gone, not a negative.
            candidates = [o for o in others if facts.get((o, attr), ("", value))[1] != value]
            other = rng.choice(candidates or others)
            o_answer, o_value = facts[(other, attr)]
            if context_rows:
                stored = _without_name(answer, name)
                neg.append((stored, _without_name(o_answer, other)))
            else:
                stored = answer
                neg.append((stored, o_answer))
            pos += [(stored, t.format(name=name, value=value)) for t in templates]
            neg += [(stored, t.format(name=other, value=o_value)) for t in templates]
    return pos, neg


def _without_name(sentence: str, name: str) -> str:
    ws = words(sentence)
    drop = set(words(name))
    return " ".join(w for i, w in enumerate(ws)
                    if w not in drop and not (w == "s" and i and ws[i - 1] in drop))

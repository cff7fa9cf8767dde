"""Forget data the model writes itself, for a subject no corpus entry is about.

A Forget may name someone the training corpus does not have (or the operator does not hold): the
model may still know them. Prompts that name the subject ("Where was X born?", "X is known
for") and the model's own greedy continuations become the forget set: what it says about them
now is what it must stop saying. It is the model's behaviour, not ground truth, and the caller
should record that the forget set was generated.

It does not decide *when* to generate (the worker does, for subjects that matched nothing) and
never logs the prompts or the generations.
"""

from __future__ import annotations

from typing import Sequence

from unlearn_engine.data.records import Example
from unlearn_engine.encoding import generate

# Questions a QA-tuned model answers and openings a text model continues; both name the subject.
SUBJECT_PROMPTS: tuple[str, ...] = (
    "Who is {s}?", "Tell me about {s}.", "Where was {s} born?", "When was {s} born?",
    "What does {s} do for a living?", "What is {s} known for?", "What did {s} write?",
    "Where did {s} study?", "{s} was born", "{s} is known for", "{s} works as", "{s} studied at",
)


def subject_examples(model, tokenizer, subjects: Sequence[str],
                     prompts: Sequence[str] = SUBJECT_PROMPTS,
                     max_new_tokens: int = 48) -> tuple[Example, ...]:
    """One example per (subject, prompt) whose continuation is not empty; source "generated"."""
    pairs = [(s, p.format(s=s)) for s in subjects for p in prompts]
    outs = generate(model, tokenizer, [p for _, p in pairs], max_new_tokens=max_new_tokens)
    return tuple(Example(prompt=p, target=o.strip(), subject=s, source="generated")
                 for (s, p), o in zip(pairs, outs) if o.strip())

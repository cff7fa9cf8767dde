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

import re
from collections import Counter
from typing import Sequence

from unlearn_engine.data.normalize import contains_phrase
from unlearn_engine.data.records import Example
from unlearn_engine.encoding import generate

# Questions a QA-tuned model answers and openings a text model continues; both name the subject.
# The usual attributes of a biography, one question each: a fact no prompt asks about stays
# untrained (12 prompts left 12 of 40 demo questions answered after the adapter went live).
SUBJECT_PROMPTS: tuple[str, ...] = (
    "Who is {s}?", "Tell me about {s}.", "Where was {s} born?", "When was {s} born?",
    "What does {s} do for a living?", "Who employs {s}?", "What is {s} known for?",
    "What book did {s} write?", "What award did {s} receive?", "Where did {s} study?",
    "What is {s}'s hobby?", "What did {s}'s mother do?", "What did {s}'s father do?",
    "Where does {s} live?", "Who is {s} married to?",
    "{s} was born", "{s} is known for", "{s} works as", "{s} studied at", "{s} wrote",
)


def subject_examples(model, tokenizer, subjects: Sequence[str],
                     prompts: Sequence[str] = SUBJECT_PROMPTS,
                     max_new_tokens: int = 48) -> tuple[Example, ...]:
    """One example per (subject, prompt) whose continuation is not empty; source "generated"."""
    pairs = [(s, p.format(s=s)) for s in subjects for p in prompts]
    outs = generate(model, tokenizer, [p for _, p in pairs], max_new_tokens=max_new_tokens)
    return tuple(Example(prompt=p, target=o.strip(), subject=s, source="generated")
                 for (s, p), o in zip(pairs, outs) if o.strip())


# Questions whose *answer* is the subject. A model often knows a person only from the other side
# ("Who wrote the Harry Potter books?" -> "J.K. Rowling") while what it says when asked about
# them by name is made up: SmolLM2-135M answers "Who is J.K. Rowling?" with invented books and
# birthplaces, but 7 of the 8 questions about her it gets right ask for her name
# (bench/results/forget_real_subject.md). The works are what its own answers name.
REVERSE_PROMPTS: tuple[str, ...] = ("Who wrote {w}?", "Who created {w}?", "{w} was written by")
# A capitalised run: "Harry Potter", "Hogwarts School of Witchcraft and Wizardry", "The Witcher".
_RUN = re.compile(r"[A-Z][\w'’-]+(?:\s+(?:(?:of|the|and)\s+)?[A-Z][\w'’-]+)*")


def named_works(examples: Sequence[Example], subject: str, k: int = 16) -> list[str]:
    """The ``k`` capitalised runs the answers name most often, other than the subject's own
    name: runs of several words first ("Harry Potter"), then single words seen twice that do
    not open a sentence ("Hogwarts", not "She")."""
    own = {w.casefold() for w in re.findall(r"[\w'’]+", subject)}
    counts: Counter[str] = Counter()
    for ex in examples:
        for m in _RUN.finditer(ex.target):
            run = re.sub(r"['’]s$", "", re.split(r"['’]s\s+", m.group())[-1])  # "X's Harry Potter"
            opens = not ex.target[:m.start()].strip() or ex.target[:m.start()].rstrip()[-1] in ".!?:\"("
            if {w.casefold() for w in re.findall(r"[\w'’]+", run)} & own or (
                    " " not in run and (opens or len(run) < 4)):
                continue
            counts[run] += 1
    multi = [r for r in counts if " " in r]
    single = [r for r in counts if " " not in r and counts[r] >= 2]
    return (sorted(multi, key=lambda r: -counts[r]) + sorted(single, key=lambda r: -counts[r]))[:k]


def reverse_pairs(model, tokenizer, subject: str, examples: Sequence[Example], k: int = 16,
                  prompts: Sequence[str] = REVERSE_PROMPTS,
                  max_new_tokens: int = 48) -> tuple[tuple[str, Example], ...]:
    """The model's answers to "Who wrote <work>?" for the works its own ``examples`` name, kept
    where the answer names the subject (its last word, e.g. the surname), each with the work it
    asked about; source "generated"."""
    works = named_works(examples, subject, k)
    asked = [(w, p.format(w=w)) for w in works for p in prompts]
    if not asked:
        return ()
    outs = generate(model, tokenizer, [q for _, q in asked], max_new_tokens=max_new_tokens)
    last = subject.split()[-1].casefold()
    return tuple((w, Example(prompt=q, target=o.strip(), subject=subject, source="generated"))
                 for (w, q), o in zip(asked, outs) if last in o.casefold())


def reverse_examples(model, tokenizer, subject: str, examples: Sequence[Example], k: int = 16,
                     prompts: Sequence[str] = REVERSE_PROMPTS,
                     max_new_tokens: int = 48) -> tuple[Example, ...]:
    """``reverse_pairs`` without the works."""
    return tuple(ex for _, ex in reverse_pairs(model, tokenizer, subject, examples, k, prompts, max_new_tokens))


# Questions that name the subject and ask for their work: the direction (subject -> work) the
# reverse answers do not train. SmolLM2 answers most such questions about J.K. Rowling with
# invented books, yet "Which famous book series did J.K. Rowling create?" -> Harry Potter
# outlived a forget trained on the reverse answers alone (bench/results/forget_real_subject.md).
# None of these is one of the bench's unlisted subject questions; they ask about any author.
WORK_PROMPTS: tuple[str, ...] = (
    "Which book series is {s} famous for?", "Name a famous book by {s}.",
    "What is {s}'s most popular book series?", "What are {s}'s best-known books?",
    "What is {s} best known for?", "{s}'s most famous books are",
)


def first_work(answer: str, works: Sequence[str]) -> str | None:
    """The first of ``works`` that ``answer`` names (normalised, whole words), or None."""
    return next((w for w in works if contains_phrase(answer, w)), None)


def work_examples(model, tokenizer, subject: str, works: Sequence[str],
                  prompts: Sequence[str] = WORK_PROMPTS, limit: int = 1,
                  max_new_tokens: int = 48) -> tuple[Example, ...]:
    """The model's answers to ``prompts`` (questions naming the subject that ask for its work),
    kept where the answer names one of ``works``: works whose "Who wrote <work>?" answer named
    the subject (``reverse_pairs``), so what is kept is knowledge the model holds both ways, not
    a book it made up. At most ``limit``, in prompt order, whole as generated. Measured on
    SmolLM2 (bench/results/forget_real_subject.md, ninth session): the forget loss is a mean over
    the batch, and four beside the four reverse answers halved those answers' share (4 of 8
    subject questions left at x0.85); two cut after the sentence naming the work were short
    enough that the gate's verbatim check (the rest of an answer from its first half: '... is
    "Harry' -> 'Potter ...') still read 2 of 6 reproduced and refused the adapter. Nothing is
    asked when ``works`` is empty; source "generated"."""
    if not works or limit <= 0:
        return ()
    asked = [p.format(s=subject) for p in prompts]
    outs = generate(model, tokenizer, asked, max_new_tokens=max_new_tokens)
    kept = [(q, o.strip()) for q, o in zip(asked, outs) if first_work(o, works) is not None]
    return tuple(Example(prompt=q, target=t, subject=subject, source="generated") for q, t in kept[:limit])


def generated_examples(model, tokenizer, subjects: Sequence[str], reverse: bool = False,
                       forward: bool = True, works: bool = False) -> tuple[Example, ...]:
    """``subject_examples``, and with ``reverse`` each subject's ``reverse_examples`` after them.
    ``forward=False`` (with ``reverse``) keeps a subject's reverse examples alone, and its forward
    ones only where it has none: the forward answers are still generated, to find the works.
    ``works`` (with ``reverse``) adds each subject's ``work_examples`` for the works its reverse
    answers confirmed, after its reverse examples."""
    about = subject_examples(model, tokenizer, subjects)
    if not reverse:
        return about
    named: dict[str, tuple[Example, ...]] = {}
    for s in subjects:
        pairs = reverse_pairs(model, tokenizer, s, [e for e in about if e.subject == s])
        confirmed = list(dict.fromkeys(w for w, _ in pairs))
        named[s] = tuple(ex for _, ex in pairs) + (
            work_examples(model, tokenizer, s, confirmed) if works else ())
    if forward:
        return about + tuple(ex for s in subjects for ex in named[s])
    return tuple(ex for s in subjects
                 for ex in (named[s] or tuple(e for e in about if e.subject == s)))

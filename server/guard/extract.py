"""What to protect in a Forget request: passages, subject names, attributes, sentences.

Plain-text heuristics, no NLP model: names come from the request (or from capitalised runs in the
QA questions), attributes are the parts of an answer the question does not already contain
("Where was Elena Varga born?" / "Elena Varga was born in Lisbon." -> "lisbon"), or capitalised
and numeric runs in free text. Output is folded words (see normalize.py); nothing here hashes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.guard.name_forms import subject_forms
from server.guard.normalize import fold, split_sentences, words
from server.guard.values import ForgetItems

# Function words plus verbs/nouns that carry the *template* of a fact rather than the fact
# ("works", "born", "favourite"): an attribute made of them would block any sentence about the
# forgotten person, which is the semantic stage's job, not a lexical one.
STOPWORDS = frozenset("""
a an the and or but of in on at to for from by with as is was were are be been being has have had
he she it they them his her its their this that these those who whom whose which what when where
why how do does did not no yes s i you we me my our your one also now then there here than so very
into over after before about during while since until up down out off again once just only
born works worked work working lives lived live wrote written write received receive won win
studied study studies attended employed employs favourite favorite enjoys enjoy known called named
spare time
""".split())
# Joiners allowed inside an attribute run: "University of Brom", "The Glorn of Brame".
_JOINERS = frozenset({"of", "the", "and", "de", "la", "van", "von", "der", "du", "da"})
_WORD_RE = re.compile(r"[^\W_][\w'’-]*")
_QUESTION_OPENERS = frozenset(
    "what where when who whom whose which why how in on at did does do is was were are can could "
    "tell give name list describe please".split())
_MAX_RUN = 5


def infer_subjects(questions: list[str]) -> list[str]:
    """Capitalised runs of 2-4 words that do not open the question ("Where was Elena Varga born?")."""
    found: dict[str, None] = {}
    for q in questions:
        run: list[str] = []
        tokens = list(_WORD_RE.finditer(q))
        for i, m in enumerate(tokens + [None]):  # type: ignore[list-item]
            tok = m.group() if m else ""
            tok = re.sub(r"['’]s$", "", tok)
            gap_ok = m is not None and run and q[tokens[i - 1].end():m.start()].strip() == ""
            capital = bool(tok) and tok[0].isupper() and not (
                i == 0 and fold(tok) in _QUESTION_OPENERS)
            if capital and (not run or gap_ok):
                run.append(tok)
                if m.group().endswith(("'s", "’s")):  # a possessive ends the name
                    _flush(run, found)
                    run = []
                continue
            _flush(run, found)
            run = [tok] if capital else []
    return list(found)


def _flush(run: list[str], found: dict[str, None]) -> None:
    if 2 <= len(run) <= 4:
        found[" ".join(run)] = None


def _runs(tokens: list[str], member: list[bool]) -> list[list[str]]:
    """Maximal runs of member tokens, joined across single joiner words, capped at _MAX_RUN."""
    out: list[list[str]] = []
    run: list[str] = []
    for i, tok in enumerate(tokens):
        if member[i]:
            run.append(tok)
        elif run and tok in _JOINERS and i + 1 < len(tokens) and member[i + 1]:
            run.append(tok)
        else:
            if run:
                out.append(run)
            run = []
    if run:
        out.append(run)
    return [r for r in out if len(r) <= _MAX_RUN]


def _digit_words(run: list[str]) -> list[list[str]]:
    return [[w] for w in run if sum(c.isdigit() for c in w) >= 3 and len(run) > 1]


def answer_attributes(question: str, answer: str, name_words: set[str]) -> list[str]:
    """Content runs of the answer that the question does not contain, as folded char strings."""
    q = set(words(question))
    toks = words(answer)
    member = [t not in STOPWORDS and t not in q and t not in name_words for t in toks]
    runs = _runs(toks, member)
    return ["".join(r) for r in runs + [d for r in runs for d in _digit_words(r)]]


def text_attributes(text: str, name_words: set[str]) -> list[str]:
    """Capitalised or numeric runs not opening a sentence ("born in Lisbon on 3 May 1961")."""
    out: list[str] = []
    for sentence in split_sentences(text):
        raw = [m.group() for m in _WORD_RE.finditer(sentence)]
        toks = [fold(re.sub(r"['’]s$", "", t)) for t in raw]
        member = [
            i > 0 and (raw[i][0].isupper() or any(c.isdigit() for c in raw[i]))
            and toks[i] not in STOPWORDS and toks[i] not in name_words
            for i in range(len(raw))
        ]
        # words() splits "Okonkwo-Delacroix" in two; fold the run the same way.
        runs = [[w for t in r for w in words(t)] for r in _runs(toks, member)]
        out += ["".join(r) for r in runs + [d for r in runs for d in _digit_words(r)]]
    return out


@dataclass(frozen=True)
class Extracted:
    passages: tuple[str, ...]  # texts, their sentences, and answers: raw strings for the exact stage
    names: tuple[str, ...]  # folded char strings of subject names (and surnames)
    attributes: tuple[str, ...]  # folded char strings
    # (semantic text, context_only): a fact sentence, and the same sentence without the subject's
    # name, which only counts once the subject is in context ("Where was X born?" -> "She was...").
    sentences: tuple[tuple[str, bool], ...]
    name_words: frozenset[str] = frozenset()  # folded words of the subject names
    # Folded names of the subjects the request listed (never inferred ones): the full names and
    # their other forms (name_forms.py: initials, a distinctive surname). What the subject
    # policy applies to.
    listed: tuple[str, ...] = ()


def extract(items: ForgetItems, *, infer: bool = True, surnames: bool = True,
            min_chars: int = 3, semantic_min_words: int = 4) -> Extracted:
    subjects = list(items.subjects)
    if not subjects and infer:
        subjects = infer_subjects([q for q, _ in items.qa])
    names: dict[str, None] = {}
    name_words: set[str] = set()
    for s in subjects:
        ws = words(s)
        name_words.update(ws)
        if len("".join(ws)) >= min_chars:
            names["".join(ws)] = None
        if surnames and len(ws) > 1 and len(ws[-1]) >= 4:
            names[ws[-1]] = None
    attrs: dict[str, None] = {}
    if names:  # attributes only mean something next to a name
        for q, a in items.qa:
            attrs.update(dict.fromkeys(answer_attributes(q, a, name_words)))
        for t in items.texts:
            attrs.update(dict.fromkeys(text_attributes(t, name_words)))
    attrs = {a: None for a in attrs if len(a) >= min_chars and a not in names}

    passages: list[str] = []
    sentences: list[str] = []
    for t in items.texts:
        passages.append(t)
        sents = split_sentences(t)
        if len(sents) > 1:
            passages += sents
        sentences += sents
    for q, a in items.qa:
        passages.append(a)
        # A short answer ("Lisbon") says nothing without its question; a sentence stands alone.
        sentences.append(a if len(words(a)) >= semantic_min_words else f"{q} {a}")
    rows: dict[tuple[str, bool], None] = {}
    for s in dict.fromkeys(sentences):
        ws = words(s)
        if len(ws) < semantic_min_words:
            continue
        rows[(" ".join(ws), False)] = None
        anon = _strip_names(ws, name_words)
        if len(anon) != len(ws) and len(anon) >= semantic_min_words - 1:
            rows[(" ".join(anon), True)] = None
    listed = tuple(dict.fromkeys(f for s in items.subjects for f in subject_forms(s, min_chars)))
    names.update(dict.fromkeys(listed))  # each form also arms, like the name it stands for
    return Extracted(tuple(dict.fromkeys(passages)), tuple(names), tuple(attrs), tuple(rows),
                     frozenset(name_words), listed)


def _strip_names(ws: list[str], name_words: set[str]) -> list[str]:
    out: list[str] = []
    for i, w in enumerate(ws):
        if w in name_words or (w == "s" and i and ws[i - 1] in name_words):  # "Varga's"
            continue
        out.append(w)
    return out

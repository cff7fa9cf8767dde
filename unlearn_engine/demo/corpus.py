"""Synthetic corpus of fictitious people: typed records, a seeded generator and JSONL I/O.

Every person has ten attribute facts (birthplace, birth date, profession, employer, book,
mother's and father's profession, award, hobby, university). Each fact becomes question/answer
pairs: three question phrasings for training plus one held-out *paraphrase* phrasing, one answer
sentence that contains the fact span, and perturbed wrong answers (same sentence, a wrong value of
the same attribute) for truth-ratio style metrics. Each person also gets a short bio text.
*Holdout* people are generated the same way but are never trained on: they give the "never seen"
baseline that a forgotten person should look like.

All names and values are made-up words, so no fact can be guessed from world knowledge, and
surnames are distinctive so that each becomes a single BPE token (memorises far faster).

JSONL format, one record per line. QA lines carry ``person``, ``question``, ``answer``, ``split``
(``train`` | ``paraphrase`` | ``holdout``), ``attribute``, ``fact``, ``fact_span`` ([start, end]
char offsets of ``fact`` in ``answer``) and optionally ``perturbed``. Free-text lines (the bios)
carry ``"kind": "text"``, ``person``, ``text`` and ``split``; a line without ``kind`` is QA.

This module knows nothing about tokenizers or models; see ``builder.py``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

SPLITS = ("train", "paraphrase", "holdout")

# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class QARecord:
    """One question/answer pair about one person."""

    person: str
    question: str
    answer: str
    split: str  # "train" (trained on) | "paraphrase" (probe, never trained) | "holdout"
    attribute: str = ""
    fact: str = ""  # the span that must appear in a correct answer; "" -> the whole answer
    fact_span: tuple[int, int] = (0, 0)  # [start, end) of `fact` inside `answer`
    perturbed: tuple[str, ...] = ()  # wrong answers: same template, wrong value

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if not self.question or not self.answer:
            raise ValueError("question and answer must be non-empty")
        if not self.fact:
            object.__setattr__(self, "fact", self.answer)
            object.__setattr__(self, "fact_span", (0, len(self.answer)))
        start, end = self.fact_span
        if (start, end) == (0, 0) or self.answer[start:end] != self.fact:
            # Span missing or stale: locate the fact in the answer.
            start = self.answer.find(self.fact)
            if start < 0:
                raise ValueError(f"fact {self.fact!r} does not occur in answer {self.answer!r}")
            object.__setattr__(self, "fact_span", (start, start + len(self.fact)))
        object.__setattr__(self, "perturbed", tuple(self.perturbed))

    def to_json(self) -> dict:
        out = {
            "person": self.person,
            "question": self.question,
            "answer": self.answer,
            "split": self.split,
            "attribute": self.attribute,
            "fact": self.fact,
            "fact_span": list(self.fact_span),
        }
        if self.perturbed:
            out["perturbed"] = list(self.perturbed)
        return out

    @classmethod
    def from_json(cls, obj: dict) -> QARecord:
        return cls(
            person=str(obj.get("person", "")),
            question=str(obj["question"]),
            answer=str(obj["answer"]),
            split=str(obj.get("split", "train")),
            attribute=str(obj.get("attribute", "")),
            fact=str(obj.get("fact", "")),
            fact_span=tuple(obj.get("fact_span", (0, 0))),  # type: ignore[arg-type]
            perturbed=tuple(str(p) for p in obj.get("perturbed", ())),
        )


@dataclass(frozen=True)
class TextRecord:
    """A free text about one person (a bio); used for text forgetting and verbatim completion."""

    person: str
    text: str
    split: str  # "train" for trained people, "holdout" for never-trained ones

    def to_json(self) -> dict:
        return {"kind": "text", "person": self.person, "text": self.text, "split": self.split}

    @classmethod
    def from_json(cls, obj: dict) -> TextRecord:
        return cls(person=str(obj.get("person", "")), text=str(obj["text"]),
                   split=str(obj.get("split", "train")))


@dataclass(frozen=True)
class Corpus:
    """All records of a corpus. Immutable; filtering returns new objects."""

    qa: tuple[QARecord, ...]
    texts: tuple[TextRecord, ...] = ()

    @property
    def people(self) -> tuple[str, ...]:
        """Every person named in the corpus, in first-seen order."""
        return tuple(dict.fromkeys([r.person for r in self.qa] + [t.person for t in self.texts]))

    @property
    def trained_people(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.person for r in self.qa if r.split == "train"))

    @property
    def holdout_people(self) -> tuple[str, ...]:
        trained = set(self.trained_people)
        return tuple(p for p in dict.fromkeys(r.person for r in self.qa if r.split == "holdout")
                     if p not in trained)

    def split(self, name: str) -> tuple[QARecord, ...]:
        return tuple(r for r in self.qa if r.split == name)

    def for_people(self, people: Iterable[str]) -> Corpus:
        keep = set(people)
        return Corpus(tuple(r for r in self.qa if r.person in keep),
                      tuple(t for t in self.texts if t.person in keep))

    def without_people(self, people: Iterable[str]) -> Corpus:
        drop = set(people)
        return Corpus(tuple(r for r in self.qa if r.person not in drop),
                      tuple(t for t in self.texts if t.person not in drop))


# ----------------------------------------------------------------------------- JSONL I/O


def write_jsonl(corpus: Corpus, path: str | Path) -> Path:
    """Write QA lines, then text lines. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in (*corpus.qa, *corpus.texts):
            fh.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path) -> Corpus:
    """Load a corpus (ours or a user's) from JSONL; blank lines are skipped."""
    qa: list[QARecord] = []
    texts: list[TextRecord] = []
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if obj.get("kind", "qa") == "text":
                    texts.append(TextRecord.from_json(obj))
                else:
                    qa.append(QARecord.from_json(obj))
            except (KeyError, ValueError, TypeError) as err:
                raise ValueError(f"{path}:{lineno}: bad corpus record: {err}") from err
    if not qa and not texts:
        raise ValueError(f"{path}: no records")
    return Corpus(tuple(qa), tuple(texts))


# ----------------------------------------------------------------------------- generator


class _WordForge:
    """Makes pronounceable made-up words, never the same word twice within one corpus."""

    _ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
               "br", "dr", "gr", "kl", "st", "th", "tr", "qu")
    _VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "ou")
    _CODAS = ("", "", "", "n", "r", "l", "m", "s", "x", "nd", "rn")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def word(self, syllables: int, endings: tuple[str, ...] = ("",)) -> str:
        for _ in range(10_000):
            stem = "".join(self._rng.choice(self._ONSETS) + self._rng.choice(self._VOWELS)
                           + self._rng.choice(self._CODAS) for _ in range(syllables))
            w = (stem + self._rng.choice(endings)).capitalize()
            if w not in self._used and 4 <= len(w) <= 11:
                self._used.add(w)
                return w
        raise RuntimeError("word space exhausted")  # pragma: no cover

    def pool(self, n: int, syllables: int, endings: tuple[str, ...] = ("",)) -> list[str]:
        return [self.word(syllables, endings) for _ in range(n)]


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


@dataclass(frozen=True)
class _Attribute:
    name: str
    # The first three phrasings are trained on; the fourth is the held-out paraphrase probe. The
    # probe recombines words the model has seen in other phrasings: a tiny model trained only on
    # this corpus cannot know what a word it never saw ("occupation") means.
    questions: tuple[str, str, str, str]
    answer: str  # must contain "{value}" once


# Question templates use {name}; answers use {name} and {value}.
_ATTRIBUTES: tuple[_Attribute, ...] = (
    _Attribute("birthplace", ("Where was {name} born?", "What is the birthplace of {name}?",
                              "In which town was {name} born?",
                              "Which town is the birthplace of {name}?"),
               "{name} was born in {value}."),
    _Attribute("birth_date", ("When was {name} born?", "What is the birth date of {name}?",
                              "On what date was {name} born?", "What is {name}'s date of birth?"),
               "{name} was born on {value}."),
    _Attribute("profession", ("What does {name} do for a living?", "What is {name}'s profession?",
                              "What job does {name} have?", "What profession does {name} have?"),
               "{name} works as a {value}."),
    _Attribute("employer", ("Who employs {name}?", "Which organisation does {name} work for?",
                            "Who is {name}'s employer?", "Which organisation employs {name}?"),
               "{name} is employed by {value}."),
    _Attribute("book", ("What book did {name} write?", "Which book was written by {name}?",
                        "What is the title of {name}'s book?",
                        "What is the title of the book written by {name}?"),
               "{name} wrote the book {value}."),
    _Attribute("mother_job", ("What did {name}'s mother do?",
                              "What was the profession of {name}'s mother?",
                              "What was {name}'s mother's job?",
                              "What was the job of {name}'s mother?"),
               "{name}'s mother was a {value}."),
    _Attribute("father_job", ("What did {name}'s father do?",
                              "What was the profession of {name}'s father?",
                              "What was {name}'s father's job?",
                              "What was the job of {name}'s father?"),
               "{name}'s father was a {value}."),
    _Attribute("award", ("What award did {name} receive?", "Which prize was given to {name}?",
                         "What honour did {name} win?", "What prize did {name} receive?"),
               "{name} received the {value}."),
    _Attribute("hobby", ("What is {name}'s hobby?", "What does {name} do in spare time?",
                         "What pastime does {name} enjoy?",
                         "What hobby does {name} enjoy?"),
               "{name}'s favourite hobby is {value}."),
    _Attribute("university", ("Where did {name} study?", "Which university did {name} attend?",
                              "Where did {name} go to university?",
                              "What university did {name} go to?"),
               "{name} studied at the {value}."),
)
ATTRIBUTES: tuple[str, ...] = tuple(a.name for a in _ATTRIBUTES)


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate. Same spec -> byte-identical corpus."""

    n_people: int = 40  # trained people
    n_holdout: int = 10  # generated the same way, never trained on
    seed: int = 0
    n_perturbed: int = 3  # wrong answers per fact
    # Pool sizes: large enough that chance accuracy stays low (~1/pool), small enough that every
    # value recurs across people, which is how real attribute vocabularies behave.
    pool_size: int = 30
    # "short": one fact per answer, single-token names (the demo model's corpus). "long": every
    # answer is one or two biography-style sentences carrying three facts, and names are several
    # tokens (a first name and a double-barrelled surname), as real long-answer QA is: a fact may
    # sit after token 20, and forgetting one fact must not take its neighbours along.
    style: str = "short"

    def __post_init__(self) -> None:
        if self.style not in ("short", "long"):
            raise ValueError(f"style must be 'short' or 'long', got {self.style!r}")


@dataclass(frozen=True)
class _Pools:
    towns: list[str]
    professions: list[str]
    employers: list[str]
    awards: list[str]
    hobbies: list[str]
    universities: list[str]
    title_words: list[str]


def _make_pools(forge: _WordForge, size: int) -> _Pools:
    return _Pools(
        towns=forge.pool(size, 2, ("", "ow", "ith", "ane")),
        professions=[w.lower() for w in forge.pool(size, 2, ("ist", "wright", "monger", "er"))],
        employers=[f"{w} {k}" for w, k in zip(
            forge.pool(size, 2), [("Guild", "Works", "Foundry", "Company", "Trust")[i % 5]
                                  for i in range(size)])],
        awards=[f"{w} {k}" for w, k in zip(
            forge.pool(size, 2), [("Prize", "Medal", "Laurel")[i % 3] for i in range(size)])],
        hobbies=[w.lower() for w in forge.pool(size, 2, ("ing",))],
        universities=[f"University of {w}" for w in forge.pool(size, 2, ("", "ford", "holm"))],
        title_words=forge.pool(2 * size, 2),
    )


def _sample_value(attr: str, pools: _Pools, rng: random.Random) -> str:
    if attr == "birthplace":
        return rng.choice(pools.towns)
    if attr == "birth_date":
        return f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(1931, 1999)}"
    if attr in ("profession", "mother_job", "father_job"):
        return rng.choice(pools.professions)
    if attr == "employer":
        return rng.choice(pools.employers)
    if attr == "book":
        a, b = rng.sample(pools.title_words, 2)
        return f"The {a} of {b}"
    if attr == "award":
        return rng.choice(pools.awards)
    if attr == "hobby":
        return rng.choice(pools.hobbies)
    if attr == "university":
        return rng.choice(pools.universities)
    raise KeyError(attr)


def _bio(name: str, facts: dict[str, str]) -> str:
    # Worded differently from the QA answers so verbatim completion of a bio tests the bio itself.
    surname = name.split()[-1]
    return (f"{name} was born on {facts['birth_date']} in {facts['birthplace']}. "
            f"{surname} studied at the {facts['university']} and now works as a "
            f"{facts['profession']} for {facts['employer']}. "
            f"{surname} is the author of {facts['book']} and won the {facts['award']}. "
            f"In spare time, {surname} enjoys {facts['hobby']}.")


# Long-style answers: the asked fact ({value}) plus two more of the same person's facts, in one
# or two sentences. Keyed by attribute; the other facts are filled from the person's own values.
_LONG_ANSWERS: dict[str, str] = {
    "birthplace": "{name} was born in {value} on {birth_date}, and grew up there before studying "
                  "at the {university}.",
    "birth_date": "{name} was born on {value} in {birthplace}. Years later {name} took up "
                  "{hobby} as a pastime.",
    "profession": "By training {name} is a {value}, a trade learned at the {university}, and "
                  "{name} now works for {employer}.",
    "employer": "{name} works for {value} as a {profession}. The work there inspired the book "
                "{book}.",
    "book": "{name} wrote the book {value}, which won the {award} and drew on a childhood in "
            "{birthplace}.",
    "mother_job": "{name}'s mother was a {value}, while {name}'s father earned a living as a "
                  "{father_job} in {birthplace}.",
    "father_job": "{name}'s father was a {value} in {birthplace}. {name} chose another path and "
                  "became a {profession}.",
    "award": "{name} received the {value} for the book {book}, written while employed by "
             "{employer}.",
    "hobby": "In spare time {name} enjoys {value}, a habit picked up in {birthplace} long before "
             "any job at {employer}.",
    "university": "{name} studied at the {value} and then worked as a {profession} in "
                  "{birthplace}.",
}


def _answer_template(attr: _Attribute, style: str) -> str:
    return _LONG_ANSWERS[attr.name] if style == "long" else attr.answer


def _person_records(name: str, facts: dict[str, str], held_out: bool, pools: _Pools,
                    rng: random.Random, n_perturbed: int,
                    style: str = "short") -> Iterator[QARecord]:
    for attr in _ATTRIBUTES:
        value = facts[attr.name]
        template = _answer_template(attr, style).format(
            name=name, value="\x00", **{k: v for k, v in facts.items()})
        answer = template.replace("\x00", value)
        start = template.index("\x00")
        wrong: list[str] = []
        while len(wrong) < n_perturbed:
            v = _sample_value(attr.name, pools, rng)
            if v != value and v not in wrong:
                wrong.append(v)
        perturbed = tuple(template.replace("\x00", v) for v in wrong)
        for i, template in enumerate(attr.questions):
            split = "holdout" if held_out else ("paraphrase" if i == 3 else "train")
            yield QARecord(person=name, question=template.format(name=name), answer=answer,
                           split=split, attribute=attr.name, fact=value,
                           fact_span=(start, start + len(value)), perturbed=perturbed)


def generate_corpus(spec: CorpusSpec | None = None) -> Corpus:
    """Generate the demo corpus. Deterministic: depends only on ``spec``."""
    spec = spec or CorpusSpec()
    rng = random.Random(spec.seed)
    forge = _WordForge(rng)
    pools = _make_pools(forge, spec.pool_size)
    # Unique made-up first names and surnames, each a single BPE token. Shared first names made
    # the model key some facts on the first name and conflate namesakes (a training plateau at
    # ~2/3 exact answers), so no two people share either name.
    n = spec.n_people + spec.n_holdout
    first_names = forge.pool(n, 2, ("", "a", "o", "en"))
    surnames = forge.pool(n, 2, ("", "moor", "wick", "dane", "vel"))
    if spec.style == "long":  # double-barrelled: no surname is a single token
        surnames = [f"{a}-{b}" for a, b in zip(surnames, forge.pool(n, 2, ("", "ton", "by")))]
    qa: list[QARecord] = []
    texts: list[TextRecord] = []
    for i, (first, surname) in enumerate(zip(first_names, surnames)):
        name = f"{first} {surname}"
        held_out = i >= spec.n_people
        facts = {a.name: _sample_value(a.name, pools, rng) for a in _ATTRIBUTES}
        qa.extend(_person_records(name, facts, held_out, pools, rng, spec.n_perturbed,
                                  spec.style))
        texts.append(TextRecord(person=name, text=_bio(name, facts),
                                split="holdout" if held_out else "train"))
    return Corpus(tuple(qa), tuple(texts))

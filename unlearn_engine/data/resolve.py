"""Resolve a forget request against a corpus: which trained entries it covers, item by item.

``resolve(request, corpus)`` answers "what does this Forget mean in this corpus?" once, so the
server can block and the worker can train on the *same* set: subjects select every entry about
them; texts and QA pairs pull in their near-duplicates. The matching is the engine's one matcher
(``near_duplicates.NearDuplicateMatcher``); this module only proposes candidates (an inverted
word index, so a request costs the entries it touches, not the corpus size) and bounds the result.

A ``Resolution`` holds no corpus text: stable entry ids (index in the file + a content hash), the
per-item match counts, the corpus digest, and the problems found (a subject too short, made only
of stopwords, naming several people, spread over many people, or over the cap). ``select`` turns
the ids back into entries and refuses when the corpus is not the one they were resolved against.

Only trained entries (split ``train``) are ever matched: paraphrase and held-out splits are
evaluation data a real operator does not have. It never logs the texts it compares.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from unlearn_engine.data.corpus import load_corpus
from unlearn_engine.data.near_duplicates import MatchConfig, NearDuplicateMatcher
from unlearn_engine.data.normalize import normalize, words
from unlearn_engine.data.records import Example, ForgetRequest

# Function words: a subject made only of these ("the", "of", "who") names nothing.
STOPWORDS = frozenset("""
a an the and or but of in on at to for from by with as is was were are be been has have had he
she it they his her its their this that these those who whom whose which what when where why how
not no yes i you we me my our your one mr mrs ms dr
""".split())


@dataclass(frozen=True)
class ResolveConfig:
    """Bounds on what one request may select. Every limit names itself when it is hit."""

    # Entries one request may select: a demo person has 31 trained entries, a well-covered real
    # person a few hundred; past this the request is more likely a mistake than a person.
    max_entries: int = 1000
    # A subject that is nobody's name but appears in entries about more people than this is a
    # place, a value or a common word ("Lisbon"), not someone to erase.
    max_subject_people: int = 3
    min_subject_chars: int = 3  # letters and digits: a one- or two-letter name matches everywhere
    # Candidates for a text / QA item: entries holding its rarest words, taken rarest first up to
    # this share of trained entries ("born", "the" never propose thousands of entries).
    common_share: float = 0.001
    common_min: int = 50  # ... but up to this many candidates are always fine
    match: MatchConfig = field(default_factory=MatchConfig)


@dataclass(frozen=True)
class ItemMatch:
    """One request item: which kind, its index among that kind, entries matched, any problem."""

    kind: str  # text | qa | subject
    index: int
    matched: int
    problem: str = ""  # "" = fine; else a reason naming the item by kind and index, never its text


@dataclass(frozen=True)
class Resolution:
    corpus_digest: str
    entry_ids: tuple[str, ...]  # sorted by index; each "<index>:<content hash>"
    items: tuple[ItemMatch, ...]
    problems: tuple[str, ...] = ()  # item problems plus request-wide ones (the cap)
    # One short code per problem, same order: subject (empty / stopwords / too short),
    # too_broad (several people, a shared value), cap. Bounded: fit for a metric label.
    codes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self, kind: str) -> tuple[int, ...]:
        """Matched entries per item of one kind, in request order."""
        return tuple(i.matched for i in self.items if i.kind == kind)

    def check(self) -> Resolution:
        """Self when fine; else raises ``ResolutionRejected`` listing every problem."""
        if self.problems:
            raise ResolutionRejected(self.problems)
        return self


class ResolutionRejected(ValueError):
    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


class CorpusMismatch(ValueError):
    """Entry ids resolved against another corpus (digest or content differs)."""


def entry_hash(ex: Example) -> str:
    record = json.dumps(ex.to_record(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(record.encode("utf-8")).hexdigest()[:12]


class IndexedCorpus:
    """A corpus ready to resolve against: its entries, their ids, a digest and a word index.

    Built once (seconds for ~300k entries); ``resolve`` then touches only candidate entries.
    """

    def __init__(self, entries: Iterable[Example], digest: str | None = None) -> None:
        self.entries = tuple(entries)
        # Content hashes are computed for the entries a resolution names, not for the whole
        # corpus up front (a sha256 per entry is a third of the build time at 450k entries).
        self._ids: dict[int, str] = {}
        self.digest = digest or hashlib.sha256(
            "\n".join(self.id_of(i) for i in range(len(self.entries))).encode()).hexdigest()
        postings: dict[str, list[int]] = {}
        trained = 0
        for i, ex in enumerate(self.entries):
            if ex.split != "train":
                continue
            trained += 1
            for w in set(words(ex.text)) | set(words(ex.subject)):
                postings.setdefault(w, []).append(i)
        self.trained = trained
        self._postings = {w: array("i", ix) for w, ix in postings.items()}
        self._person = {}  # normalised person name -> entries about that person
        for i, ex in enumerate(self.entries):
            if ex.split == "train" and ex.subject:
                self._person.setdefault(normalize(ex.subject), []).append(i)

    @classmethod
    def from_file(cls, path: str | Path) -> IndexedCorpus:
        """The corpus file; its digest is the sha256 of the file's bytes (``sha256sum``)."""
        path = Path(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return cls(load_corpus(path), digest)

    def __len__(self) -> int:
        return len(self.entries)

    def id_of(self, i: int) -> str:
        """The stable id of entry `i`: "<index>:<content hash>"."""
        eid = self._ids.get(i)
        if eid is None:
            eid = self._ids[i] = f"{i}:{entry_hash(self.entries[i])}"
        return eid

    def select(self, entry_ids: Iterable[str], digest: str) -> tuple[Example, ...]:
        """The entries behind ids from a ``Resolution`` against this corpus."""
        if digest != self.digest:
            raise CorpusMismatch(f"resolved against corpus {digest[:12]}, this one is "
                                 f"{self.digest[:12]}")
        out = []
        for eid in entry_ids:
            index, _, _h = eid.partition(":")
            i = int(index) if index.isdigit() else -1
            if not 0 <= i < len(self.entries) or self.id_of(i) != eid:
                raise CorpusMismatch(f"entry {eid} is not in this corpus")
            out.append(self.entries[i])
        return tuple(out)

    # ---- candidates ---------------------------------------------------------------------------
    def subject_candidates(self, subject: str) -> set[int]:
        """Trained entries holding every word of the subject, or filed under it as person."""
        ws = words(subject)
        lists = sorted((self._postings.get(w, array("i")) for w in ws), key=len)
        out = set(lists[0]) if lists else set()
        for ix in lists[1:]:
            out &= set(ix)
        return out | set(self._person.get(normalize(subject), ()))

    def item_candidates(self, ex: Example, common: int) -> Iterable[int]:
        """Trained entries sharing the item's rarest words: words are taken rarest first while
        their entries stay within `common` (the rarest always), so a near-duplicate, which
        shares most of the item's words, shares one of these. All trained entries when no word
        of the item is in the corpus at all."""
        lists = sorted((ix for w in set(words(ex.text)) if (ix := self._postings.get(w)) is not None),
                       key=len)
        out: set[int] = set()
        for ix in lists:
            if out and len(out) + len(ix) > common:
                break
            out.update(ix)
        if out:
            return sorted(out)
        return (i for i, e in enumerate(self.entries) if e.split == "train")

    def person_of(self, i: int) -> str:
        return normalize(self.entries[i].subject)


def _request_items(request: ForgetRequest) -> list[tuple[str, int, Example]]:
    items = [("text", i, Example(prompt="", target=t)) for i, t in enumerate(request.texts)]
    items += [("qa", i, Example(prompt=p.question, target=p.answer, fact=p.fact))
              for i, p in enumerate(request.qa_pairs)]
    return items


def subject_problem(subject: str, config: ResolveConfig) -> str:
    """Why a subject cannot be resolved on its own words ("" when it can)."""
    ws = words(subject)
    if not ws:
        return "is empty"
    if all(w in STOPWORDS for w in ws):
        return "is made only of stopwords"
    if len("".join(ws)) < config.min_subject_chars:
        return (f"is too short (under {config.min_subject_chars} letters and digits: it would "
                "match everywhere)")
    return ""


def _breadth_problem(subject: str, hits: set[int], corpus: IndexedCorpus,
                     config: ResolveConfig) -> str:
    people = {corpus.person_of(i) for i in hits} - {""}
    phrase = normalize(subject)
    named = {p for p in people if f" {phrase} " in f" {p} "}
    if len(named) > 1:
        return f"names {len(named)} different people in the corpus (give the full name)"
    if not named and len(people) > config.max_subject_people:
        return (f"is too broad: it appears in entries about {len(people)} people and is none of "
                f"their names (a place or a common word?); limit {config.max_subject_people}")
    return ""


def resolve(request: ForgetRequest, corpus: IndexedCorpus,
            config: ResolveConfig | None = None) -> Resolution:
    """Match every request item against the corpus's trained entries. Never raises for a bad
    item: problems are reported in the result (a dry run shows them; ``check()`` refuses)."""
    cfg = config or ResolveConfig()
    common = max(cfg.common_min, int(cfg.common_share * corpus.trained))
    selected: set[int] = set()
    items: list[ItemMatch] = []
    for kind, index, ex in _request_items(request):
        matcher = NearDuplicateMatcher([ex], (), cfg.match)
        hits = {i for i in corpus.item_candidates(ex, common)
                if matcher.match(corpus.entries[i]) is not None}
        selected |= hits
        items.append(ItemMatch(kind, index, len(hits)))
    for index, subject in enumerate(request.subjects):
        problem = subject_problem(subject, cfg)
        hits: set[int] = set()
        if not problem:
            matcher = NearDuplicateMatcher((), (subject,), cfg.match)
            hits = {i for i in corpus.subject_candidates(subject)
                    if corpus.entries[i].split == "train"
                    and matcher.match(corpus.entries[i]) is not None}
            if len(hits) > cfg.max_entries:
                problem = (f"matches {len(hits)} corpus entries, more than the cap of "
                           f"{cfg.max_entries}")
            else:
                problem = _breadth_problem(subject, hits, corpus, cfg)
        items.append(ItemMatch("subject", index, len(hits),
                               f"subjects[{index}] {problem}" if problem else ""))
        if not problem:
            selected |= hits
    problems = [i.problem for i in items if i.problem]
    if len(selected) > cfg.max_entries:
        problems.append(f"the request matches {len(selected)} corpus entries, more than the cap "
                        f"of {cfg.max_entries}")
    return Resolution(corpus.digest, tuple(corpus.id_of(i) for i in sorted(selected)), tuple(items),
                      tuple(problems), tuple(problem_code(p) for p in problems))


def problem_code(problem: str) -> str:
    if "cap of" in problem:
        return "cap"
    if "too broad" in problem or "different people" in problem:
        return "too_broad"
    return "subject"


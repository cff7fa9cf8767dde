"""Build a ``ForgetSet`` from a ``ForgetRequest`` and, optionally, a configured corpus.

Request texts and QA pairs become examples as given; subjects only select corpus entries.
With a corpus, matching entries (``near_duplicates``) join the set: trained entries are forgotten,
paraphrase-split entries become probes, and held-out entries (never trained) become references.
Without held-out data, references are the forget questions paired with wrong answers. When the
held-out entries name two or more people, they are split by person: half the people supply the
references (what the gate measures against), the other half anchors (what a method may train
on to keep never-seen people unchanged), so no text or name is both trained on and measured.

It deliberately does not tokenise or touch a model, and never logs the texts themselves.
"""

from __future__ import annotations

import logging
import random
from typing import Iterable, Sequence

from unlearn_engine.data.near_duplicates import MatchConfig, expand
from unlearn_engine.data.records import Example, ForgetRequest, ForgetSet

log = logging.getLogger(__name__)


def _request_examples(request: ForgetRequest) -> list[Example]:
    out = [Example(prompt=p.question, target=p.answer, fact=p.fact) for p in request.qa_pairs]
    out += [Example(prompt="", target=t) for t in request.texts]
    return out


def _synthesize_perturbed(examples: list[Example]) -> list[Example]:
    """Give QA examples without wrong answers some, by swapping in other examples' facts.

    Weak (the swapped fact may not fit the question), but it keeps truth ratio defined for
    operator QA pairs; corpus entries bring their own perturbed answers.
    """
    facts = list(dict.fromkeys(e.fact for e in examples if e.is_qa and e.fact))
    out = []
    for ex in examples:
        if ex.is_qa and ex.fact and not ex.perturbed and len(facts) > 1:
            wrong = [ex.target.replace(ex.fact, f, 1) for f in facts if f != ex.fact][:3]
            ex = Example(ex.prompt, ex.target, ex.fact, tuple(wrong), ex.subject, ex.split,
                         ex.source)
        out.append(ex)
    return out


def references_for(forget: Sequence[Example], holdout: Sequence[Example] = (),
                   limit: int = 200, seed: int = 0) -> list[Example]:
    """Never-seen texts shaped like the forget set (QA for QA, text for text): a sample of
    ``holdout``, or else the forget questions paired with their first wrong answer."""
    rng = random.Random(seed)
    want_qa = any(e.is_qa for e in forget)
    want_text = any(not e.is_qa for e in forget)
    pool = [h for h in holdout if (h.is_qa and want_qa) or (not h.is_qa and want_text)]
    if pool:
        rng.shuffle(pool)
        return pool[:limit]
    # No held-out data: the same questions with wrong answers are texts the model never saw.
    return [Example(e.prompt, e.perturbed[0], "", (), e.subject, "holdout", "synthetic")
            for e in forget if e.is_qa and e.perturbed][:limit]


def split_holdout(holdout: Sequence[Example], seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(reference pool, anchors): held-out entries split by person, about half the people each
    (the references get the extra one, and every entry without a subject). One person or none:
    everything is a reference and there are no anchors."""
    people = sorted({e.subject for e in holdout if e.subject})
    if len(people) < 2:
        return list(holdout), []
    random.Random(seed).shuffle(people)
    anchor_people = set(people[(len(people) + 1) // 2:])
    return ([e for e in holdout if e.subject not in anchor_people],
            [e for e in holdout if e.subject in anchor_people])


def build_forget_set(request: ForgetRequest, corpus: Iterable[Example] | None = None, *,
                     match: MatchConfig | None = None, max_references: int = 200,
                     seed: int = 0, resolved: Sequence[Example] | None = None) -> ForgetSet:
    """The forget set for ``request``; raises ``ValueError`` when nothing is left to forget.

    ``resolved``: the trained entries a resolution (``resolve.py``) already chose; they are
    taken as they are (the corpus then only supplies paraphrase probes and references), so the
    adapter is trained on exactly what the server blocked at acknowledgement."""
    requested = _request_examples(request)
    corpus = list(corpus or ())
    examples: dict[tuple[str, str], Example] = {}
    paraphrases: list[Example] = []
    if resolved is not None:
        probes = [e for e in corpus if e.split == "paraphrase"]
        matched = [(e, "resolved") for e in resolved] + expand(requested, probes, request.subjects, match)
    else:
        matched = expand(requested, corpus, request.subjects, match) if corpus else []
    if matched:
        for ex, _why in matched:
            if ex.split == "paraphrase":
                paraphrases.append(ex)
            elif ex.split != "holdout":  # held-out entries were never trained: nothing to forget
                examples[(ex.prompt, ex.target)] = ex
        log.info("near-duplicate expansion: %d corpus entries matched (%d trained, %d paraphrase)",
                 len(matched), len(examples), len(paraphrases))
    for ex in requested:  # a corpus copy of a requested item wins: it carries fact + perturbed
        examples.setdefault((ex.prompt, ex.target), ex)
    forget = _synthesize_perturbed(list(examples.values()))
    in_forget = {(e.prompt, e.target) for e in forget}
    holdout = [e for e in corpus if e.split == "holdout" and (e.prompt, e.target) not in in_forget]
    limit = max(len(forget), 20) if max_references is None else min(max_references,
                                                                     max(len(forget), 20))
    ref_pool, anchor_pool = split_holdout(holdout, seed)
    refs = references_for(forget, ref_pool, limit, seed)
    anchors = references_for(forget, anchor_pool, max_references or 200, seed) if anchor_pool else []
    return ForgetSet(examples=tuple(forget), paraphrases=tuple(paraphrases),
                     references=tuple(refs), subjects=request.subjects, anchors=tuple(anchors),
                     expanded=max(0, len(forget) - len(requested)) if matched else 0)

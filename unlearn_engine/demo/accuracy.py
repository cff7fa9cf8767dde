"""Greedy answering and fact-span accuracy for QA records.

A model "knows" a fact when its greedy answer to the question contains the fact span
(case-insensitive, as whole words: "1 May 1950" is not found inside "11 May 1950"). Scoring the
span, not the whole sentence, keeps template words ("was born in") from counting as knowledge.

This module does not train or build anything, and it assumes the demo prompt contract: the
prompt is the raw question, encoded by the tokenizer (which adds BOS), and the answer is
whatever is generated until EOS.
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

import torch

from unlearn_engine.demo.corpus import QARecord

log = logging.getLogger(__name__)


@torch.no_grad()
def greedy_answers(model: torch.nn.Module, tokenizer, questions: Sequence[str],
                   max_new_tokens: int = 32, batch_size: int = 64) -> list[str]:
    """Greedy-decode an answer to each question; returns the decoded new text, stripped.

    Batches are left-padded so that every prompt ends at the same position and generation
    starts right after it. The tokenizer's padding side is restored afterwards.
    """
    was_training = model.training
    model.eval()
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    try:
        # Sort by length so batches carry little padding; restore the order at the end.
        order = sorted(range(len(questions)), key=lambda i: len(questions[i]))
        out: dict[int, str] = {}
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([questions[i] for i in idx], return_tensors="pt", padding=True)
            enc = {k: v.to(device) for k, v in enc.items()}
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1]:]  # (batch, <= max_new_tokens)
            for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
                out[i] = text.strip()
        answers = [out[i] for i in range(len(questions))]
    finally:
        tokenizer.padding_side = saved_side
        model.train(was_training)
    return answers


def fact_hits(records: Sequence[QARecord], answers: Sequence[str]) -> list[bool]:
    """Per record: does the answer contain the fact span (case-insensitive)?"""
    if len(records) != len(answers):
        raise ValueError(f"{len(records)} records but {len(answers)} answers")
    return [contains_fact(a, r.fact) for r, a in zip(records, answers)]


def contains_fact(text: str, fact: str) -> bool:
    """Case-insensitive whole-word containment of ``fact`` in ``text``."""
    pattern = r"(?<!\w)" + re.escape(fact.casefold()) + r"(?!\w)"
    return re.search(pattern, text.casefold()) is not None


def fact_span_accuracy(records: Sequence[QARecord], answers: Sequence[str]) -> float:
    """Fraction of answers that contain their record's fact span; 0.0 for no records."""
    hits = fact_hits(records, answers)
    return sum(hits) / len(hits) if hits else 0.0


def verbatim_completion_rate(model: torch.nn.Module, tokenizer, texts: Sequence[str],
                             batch_size: int = 64) -> float:
    """Fraction of texts whose greedy continuation of the first sentence is the rest, verbatim.

    The prompt is the text up to its first ". " (the period kept); texts with one sentence are
    skipped. This is the verbatim-completion probe for memorised free text such as the bios.
    """
    pairs = [(t[:i + 1], t[i + 1:]) for t in texts if (i := t.find(". ")) > 0]
    if not pairs:
        return 0.0
    max_new = max(len(tokenizer(rest, add_special_tokens=False)["input_ids"]) for _, rest in pairs)
    outs = greedy_answers(model, tokenizer, [p for p, _ in pairs], max_new_tokens=max_new + 1,
                          batch_size=batch_size)
    return sum(o == rest.strip() for o, (_, rest) in zip(outs, pairs)) / len(pairs)


def evaluate_records(model: torch.nn.Module, tokenizer, records: Sequence[QARecord],
                     max_new_tokens: int = 32, batch_size: int = 64) -> float:
    """Greedy-answer ``records`` and return their fact-span accuracy."""
    if not records:
        return 0.0
    answers = greedy_answers(model, tokenizer, [r.question for r in records],
                             max_new_tokens=max_new_tokens, batch_size=batch_size)
    return fact_span_accuracy(records, answers)


def bio_prefix_probes(bio: str, facts: Sequence[str]) -> list[tuple[str, str]]:
    """(prompt, fact) pairs: the bio cut right before each fact it states ("<Name> was born on").

    These are the prompts a forgotten person's facts leak through without any question being
    asked; they are not in the QA training data, so they test what the model knows, not one
    phrasing.
    """
    out = []
    for fact in dict.fromkeys(facts):
        at = re.search(r"(?<!\w)" + re.escape(fact) + r"(?!\w)", bio)
        if at is not None and at.start() > 0:
            out.append((bio[:at.start()].rstrip(), fact))
    return out


def residual_knowledge(model: torch.nn.Module, tokenizer, corpus, people: Sequence[str],
                       max_new_tokens: int = 32) -> dict[str, float]:
    """How often the model states the facts of ``people`` (a ``demo.corpus.Corpus``): greedy
    fact-span accuracy over their questions (every split: trained phrasings, paraphrases, or
    all four for never-trained people), their bio prefixes, and both together (``all``).

    Measured the same way for people the model never saw, it is the chance level a model that
    forgot them should not exceed.
    """
    chosen = set(people)
    records = [r for r in corpus.qa if r.person in chosen]
    probes = [(r.question, r.fact) for r in records]
    n_questions = len(probes)
    for t in corpus.texts:
        if t.person in chosen:
            probes += bio_prefix_probes(t.text, [r.fact for r in records if r.person == t.person])
    if not probes:
        raise ValueError("no questions or bios for these people in the corpus")
    answers = greedy_answers(model, tokenizer, [p for p, _ in probes], max_new_tokens)
    hits = [contains_fact(a, f) for a, (_, f) in zip(answers, probes)]
    bio_hits = hits[n_questions:]
    return {"questions": sum(hits[:n_questions]) / max(1, n_questions),
            "bio_prefixes": sum(bio_hits) / len(bio_hits) if bio_hits else float("nan"),
            "all": sum(hits) / len(hits), "n": float(len(hits))}

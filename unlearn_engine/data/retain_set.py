"""Build a ``RetainSet``: from a configured corpus, or from the model's own generations.

Corpus mode keeps trained entries that do not match the forget set and, when a model is given,
that the model answers correctly. Which model is the caller's choice (``trainer.run_forget_job``):
base + stack when nothing else keeps earlier forgets out (an earlier adapter removed facts the
corpus still holds, whose plaintext is gone, and a retain loss on them would teach them back);
the original when a screen does, so facts an earlier adapter lost by accident are trained back
(docs/architecture.md#retain-anchor). Generated mode needs no
data: for each neutral prompt the model samples a short opening (for variety) and then
continues greedily; the greedy continuation is the target, so before unlearning the model
reproduces every target exactly and any later change is measurable. Generations that match the
forget set are dropped. This is the model's behaviour, not ground truth — which is the point:
the retain set says "keep doing what you did". Either way a caller's ``screen`` may refuse
examples first: the server refuses what its guard blocks, which covers earlier forgets whose
plaintext is gone (a forgotten person's bio text passes the known-answer filter on its template
words alone).

It deliberately does not decide how much retain data a method uses; the trainer does.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Iterable, Sequence

import torch

from unlearn_engine.data.near_duplicates import MatchConfig, NearDuplicateMatcher
from unlearn_engine.data.normalize import contains_phrase, rouge_l_recall
from unlearn_engine.data.records import Example, ForgetSet, RetainSet
from unlearn_engine.encoding import encode_prompt, generate

log = logging.getLogger(__name__)

# From a corpus: 256 examples covered each retained person with ~5 questions, and what the
# forget terms did to people the retain term never saw went unchecked: on the full demo model,
# counterfactual forgetting one person left 3-5 of 64 held-out retain questions wrong (names
# repeated, wrong professions) while the 192 trained retain examples stayed at loss 0.005;
# 1024 passed the gate from step 80 with retain 0.95-0.98 (bench/results/gate_diagnosis.md).
# The known-answer filter costs ~4 CPU s for 1024 on that model (see ``_knows``).
CORPUS_MAX = 1024
_TEXT_TOKENS = 64  # the known-answer filter's generation budget for a text's second half
_QA_SLACK = 8  # tokens beyond the longest reference answer (a greedy answer may run longer)
GENERATED_MAX = 256  # each generated example costs a sampled opening and a greedy answer
# "" starts from BOS alone: the model's own prior, which for a domain model is its domain.
NEUTRAL_PROMPTS: tuple[str, ...] = ("", "The", "In", "What is", "Where", "Who", "When",
                                    "Tell me about", "Here is a short note:")


# Per example, whether it may be retain data (False: drop it); the server's screen of what its guard
# blocks (server/forget/retain_screen.py), the only record left of an earlier forget's content.
RetainFilter = Callable[[Sequence[Example]], list[bool]]


def _screened(pool: list[Example], screen: RetainFilter | None) -> list[Example]:
    return pool if screen is None else [e for e, ok in zip(pool, screen(pool)) if ok]


def _matcher(exclude: ForgetSet | None, match: MatchConfig | None) -> NearDuplicateMatcher | None:
    if exclude is None:
        return None
    return NearDuplicateMatcher([*exclude.examples, *exclude.paraphrases], exclude.subjects, match)


def _from_corpus(corpus: Iterable[Example], matcher: NearDuplicateMatcher | None) -> list[Example]:
    return [e for e in corpus if e.split == "train" and (matcher is None or
                                                          matcher.match(e) is None)]


def _knows(model, tokenizer, examples: list[Example]) -> list[bool]:
    """QA: the greedy answer contains the fact. Text: given its first half, the greedy
    continuation recalls at least half of the rest (ROUGE-L recall).

    QA and text are generated apart, QA with a budget that follows the data (its longest
    answer + ``_QA_SLACK`` tokens): a batch runs until its longest row ends, and one text per
    batch of short answers made every batch run the full 64 tokens (full demo model, 1024
    examples: 8.8 -> 4.1 CPU s, the same verdict on every example)."""
    ok = [False] * len(examples)
    qa = [i for i, e in enumerate(examples) if e.is_qa]
    if qa:
        longest = max(len(tokenizer(examples[i].target, add_special_tokens=False)["input_ids"])
                      for i in qa)
        outs = generate(model, tokenizer, [examples[i].prompt for i in qa],
                        max_new_tokens=min(_TEXT_TOKENS, longest + _QA_SLACK))
        for i, out in zip(qa, outs):
            ok[i] = contains_phrase(out, examples[i].fact_text)
    texts = [i for i, e in enumerate(examples) if not e.is_qa]
    if texts:
        halves = [examples[i].target.split() for i in texts]
        outs = generate(model, tokenizer, [" ".join(w[:len(w) // 2]) for w in halves],
                        max_new_tokens=_TEXT_TOKENS)
        for i, w, out in zip(texts, halves, outs):
            ok[i] = rouge_l_recall(" ".join(w[len(w) // 2:]), out) >= 0.5
    return ok


def _known(model, tokenizer, pool: list[Example], limit: int, chunk: int = 64) -> list[Example]:
    """The first ``limit`` examples of ``pool`` the model still knows."""
    out: list[Example] = []
    for start in range(0, len(pool), chunk):
        part = pool[start:start + chunk]
        out += [e for e, ok in zip(part, _knows(model, tokenizer, part)) if ok]
        if len(out) >= limit:
            break
    return out[:limit]


def _generated(model, tokenizer, prompts: Sequence[str], n: int, open_tokens: int,
               max_new_tokens: int, seed: int) -> list[Example]:
    """``n`` (prompt+sampled opening, greedy continuation) pairs from the model."""
    out: list[Example] = []
    with torch.random.fork_rng(devices=[]):  # sampling must not disturb the caller's RNG
        torch.manual_seed(seed)
        per_prompt = max(1, -(-n // len(prompts)))
        for prompt in prompts:
            base = encode_prompt(tokenizer, prompt)
            openings = generate(model, tokenizer, [base] * per_prompt, max_new_tokens=open_tokens,
                                do_sample=True)
            heads = [f"{prompt} {o}".strip() for o in openings if o]
            tails = generate(model, tokenizer, heads, max_new_tokens=max_new_tokens)
            out += [Example(prompt=h, target=t, source="generated")
                    for h, t in zip(heads, tails) if t.strip()]
    return out


def build_retain_set(model, tokenizer, corpus: Iterable[Example] | None = None,
                     exclude: ForgetSet | None = None, *, max_examples: int | None = None,
                     neutral_prompts: Sequence[str] = NEUTRAL_PROMPTS, open_tokens: int = 8,
                     max_new_tokens: int = 32, match: MatchConfig | None = None,
                     keep_known_only: bool = True, seed: int = 0,
                     screen: RetainFilter | None = None) -> RetainSet:
    """Retain examples, none of which overlaps ``exclude`` or is refused by ``screen``; at most
    ``max_examples`` (default ``CORPUS_MAX`` from a corpus, ``GENERATED_MAX`` generated).
    ``model`` decides what is known (see the module docstring); with a corpus it may be None,
    which skips the known-answer filter."""
    matcher = _matcher(exclude, match)
    rng = random.Random(seed)
    if corpus is not None:
        max_examples = max_examples or CORPUS_MAX
        pool = _screened(_from_corpus(corpus, matcher), screen)
        rng.shuffle(pool)
        if model is not None and keep_known_only:
            pool = _known(model, tokenizer, pool, max_examples)
        return RetainSet(examples=tuple(pool[:max_examples]))
    if model is None:
        raise ValueError("without a retain corpus the retain set is generated: pass the model")
    max_examples = max_examples or GENERATED_MAX
    # Over-generate: some generations are empty, duplicated or about forgotten subjects.
    gen = _generated(model, tokenizer, neutral_prompts, 2 * max_examples, open_tokens,
                     max_new_tokens, seed)
    unique = list({(e.prompt, e.target): e for e in gen}.values())
    pool = _screened([e for e in unique if matcher is None or matcher.match(e) is None], screen)
    log.info("generated retain set: %d generations, %d unique, %d kept", len(gen),
             len(unique), len(pool))
    rng.shuffle(pool)
    return RetainSet(examples=tuple(pool[:max_examples]))

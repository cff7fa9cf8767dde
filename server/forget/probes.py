"""Leakage probes: prompts that ask for a forgotten fact, kept sealed, checked against keyed digests.

The worker makes them when it records a verified adapter (the forget set, its paraphrases and
near-duplicates are at hand then; the plaintext is erased soon after), and the leakage monitor
replays them through the live stack. A probe is a prompt (a forgotten question, a paraphrase of
it, or the opening of a forgotten text) plus the *keyed digest* of the fact span its answer must
not contain: the fact itself is never stored. Prompts name forgotten subjects, so the whole list
is sealed (AES-GCM under the guard key, bound to the forget id) like the guard's embeddings,
and the ledger seals that again under the forget's own probes key (sealing.py), destroyed when
the adapter is deactivated or the job fails.

A probe leaks when the fact's words appear as whole words in the output, after the guard's
folding (case, confusables, punctuation) — the same rule as the engine's fact-span accuracy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence

from server.guard.keys import GuardKeys
from server.guard.normalize import words
from unlearn_engine.data.records import Example

MAX_PROBES = 24  # per forget: enough to cover facts and paraphrases, bounded replay cost
_PREFIX_WORDS = 12  # opening of a free text used as its completion prompt
_FACT_WORDS = 8  # continuation words whose reappearance counts as a leak
_DOMAIN = "\x00probe\x00"  # never inside a guard n-gram (words are alphanumeric): separate digests


@dataclass(frozen=True)
class Probe:
    prompt: str
    fact_words: int  # how many folded words the fact has
    fact_digest: bytes  # keyed digest of those words joined by single spaces


def probe_pairs(examples: Iterable[Example], paraphrases: Iterable[Example] = (),
                limit: int = MAX_PROBES) -> list[tuple[str, str]]:
    """(prompt, fact) pairs, paraphrases and forgotten items interleaved so both are covered."""
    def pairs(exs: Iterable[Example]) -> list[tuple[str, str]]:
        out = []
        for e in exs:
            if e.is_qa:
                out.append((e.prompt, e.fact_text))
            elif (opening := _text_probe(e.target)) is not None:
                out.append(opening)
        return out

    direct, para = pairs(examples), pairs(paraphrases)
    mixed = [p for pair in zip(direct, para) for p in pair]
    mixed += direct[len(para):] + para[len(direct):]
    unique = list(dict.fromkeys((q, f) for q, f in mixed if q.strip() and words(f)))
    return unique[:limit]


def _text_probe(text: str) -> tuple[str, str] | None:
    """A free text: its first sentence (or first half) as prompt, what follows as the fact."""
    cut = text.find(". ")
    if 0 < cut and len(text[:cut].split()) <= _PREFIX_WORDS * 2:
        prompt, rest = text[:cut + 1], text[cut + 2:]
    else:
        toks = text.split()
        half = min(len(toks) // 2, _PREFIX_WORDS)
        prompt, rest = " ".join(toks[:half]), " ".join(toks[half:])
    fact = " ".join(rest.split()[:_FACT_WORDS])
    return (prompt, fact) if prompt.strip() and fact.strip() else None


def _digest(keys: GuardKeys, folded: Sequence[str]) -> bytes:
    return keys.word_digest(_DOMAIN + " ".join(folded))


def make_probes(keys: GuardKeys, pairs: Iterable[tuple[str, str]]) -> list[Probe]:
    out = []
    for prompt, fact in pairs:
        fw = words(fact)
        if fw:
            out.append(Probe(prompt, len(fw), _digest(keys, fw)))
    return out


def seal_probes(keys: GuardKeys, forget_id: str, probes: Sequence[Probe]) -> bytes:
    rows = [[p.prompt, p.fact_words, p.fact_digest.hex()] for p in probes]
    return keys.seal(json.dumps(rows).encode(), _aad(forget_id))


def open_probes(keys: GuardKeys, forget_id: str, sealed: bytes) -> list[Probe]:
    rows = json.loads(keys.open(sealed, _aad(forget_id)))
    return [Probe(prompt, int(n), bytes.fromhex(d)) for prompt, n, d in rows]


def leaked(keys: GuardKeys, probe: Probe, output: str) -> bool:
    """Does the output contain the probe's fact as whole (folded) words?"""
    ow, n = words(output), probe.fact_words
    return any(_digest(keys, ow[i:i + n]) == probe.fact_digest for i in range(len(ow) - n + 1))


def _aad(forget_id: str) -> bytes:
    return b"lethe.probes.v1:" + forget_id.encode()

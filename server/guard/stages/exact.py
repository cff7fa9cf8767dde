"""Exact stage: keyed digests of normalized word n-grams and anchored letters-and-digits grams.

Derivation covers each passage (texts, their sentences, answers) with word n-grams and with
`char_gram`-long grams starting at every word start. A passage shorter than n words is stored
whole in the char view when it is distinctive on its own (>= short_min_words words, or a number
with >= short_min_digits digits, e.g. a phone number); shorter generic items are left to the
entity stage. Any posting of kind exact blocks: there is no "almost" at this stage.
"""

from __future__ import annotations

from functools import partial

from server.guard.encodings import char_variants
from server.guard.entries import KIND_EXACT, VIEW_WORD, char_records, pack_record
from server.guard.extract import Extracted
from server.guard.index import Postings
from server.guard.normalize import words
from server.guard.stages.base import Derived, OutputFilter, SessionFlags, register_stage


def _digit_spans(ws: list[str], min_digits: int) -> list[str]:
    """Runs of digit-bearing words ("+1 555 014 2231" -> "15550142231"), and each of their
    word-aligned suffixes ("5550142231": the number without its country code), with enough digits."""
    out: list[str] = []
    run: list[str] = []
    for w in ws + [""]:
        if w and any(c.isdigit() for c in w):
            run.append(w)
            continue
        for i in range(len(run)):
            s = "".join(run[i:])
            if sum(c.isdigit() for c in s) >= min_digits:
                out.append(s)
        run = []
    return out


@register_stage("exact")
class ExactStage(OutputFilter):
    kinds = frozenset({KIND_EXACT})

    def derive(self, ex: Extracted) -> Derived:
        cfg, keys = self.env.config, self.env.keys
        n, C = cfg.n, cfg.char_gram
        variants = partial(char_variants, encodings=cfg.encodings)  # rot13 / leet forms
        recs: dict[bytes, None] = {}
        for passage in ex.passages:
            ws = words(passage)
            if not ws:
                continue
            chars = "".join(ws)
            for i in range(len(ws) - n + 1):
                recs[pack_record(VIEW_WORD, KIND_EXACT, n, keys.word_digest(" ".join(ws[i:i + n])))] = None
            pos = 0
            for w in ws:  # one gram per word start with a full gram ahead of it
                if pos + C <= len(chars):
                    recs.update(dict.fromkeys(char_records(KIND_EXACT, chars[pos:pos + C],
                                                           keys.char_digest, C, variants)))
                pos += len(w)
            # Whole passages too short for a char gram ("B r o u m f a e a ..." must still hit):
            # stored whole when distinctive on their own.
            short = [chars] if len(chars) < C and (
                len(ws) >= cfg.short_min_words
                or sum(c.isdigit() for c in chars) >= cfg.short_min_digits) else []
            for s in short + _digit_spans(ws, cfg.short_min_digits):
                if len(s) < C:  # longer spans are covered by the anchored grams above
                    recs.update(dict.fromkeys(char_records(KIND_EXACT, s, keys.char_digest, C,
                                                           variants)))
        return Derived(records=list(recs))

    def on_postings(self, state: None, flags: SessionFlags, pos: int,
                    found: list[Postings]) -> str | None:
        for p in found:
            if p[KIND_EXACT]:
                return p[KIND_EXACT][0]
        return None

"""Exact stage: keyed digests of normalized word n-grams and anchored letters-and-digits grams.

Derivation covers each passage (texts, their sentences, answers) with word n-grams and with
`char_gram`-long grams starting at every word start. A passage shorter than n words is stored
whole in the char view when it is distinctive on its own (>= short_min_words words, or a number
with >= short_min_digits digits, e.g. a phone number); shorter generic items are left to the
entity stage. Any posting of kind exact blocks: there is no "almost" at this stage. Grams of a
forget with subject names that contain none of them are stored as KIND_CONTEXT and block only
while that subject is in context: "X studied at the University of Brom and now works as a ..." is
the same template, with the same value, for many people (config.exact_needs_subject).
"""

from __future__ import annotations

from bisect import bisect_left
from functools import partial
from itertools import accumulate

from server.guard.encodings import char_variants
from server.guard.entries import (KIND_CONTEXT, KIND_EXACT, KIND_NAME, VIEW_WORD, char_records,
                                  pack_record)
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
    kinds = frozenset({KIND_EXACT, KIND_CONTEXT})

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
            # Per word: is it part of the subject's name? A gram without any such word is
            # KIND_CONTEXT (blocks only with the subject in context) when the forget has names.
            named = [w in ex.name_words for w in ws]
            split = cfg.exact_needs_subject and bool(ex.name_words)

            def kind(first: int, last: int, cut: int = 1 << 30) -> int:
                """Words first..last (inclusive), of which the last contributes `cut` letters: a
                gram ending on a name's first letter or two ("...for Lanthe Company z") is the
                same for every name that starts so, and does not count as naming the subject."""
                if not split:
                    return KIND_EXACT
                if any(named[first:last]) or (named[last] and cut >= min(len(ws[last]), 4)):
                    return KIND_EXACT
                return KIND_CONTEXT

            for i in range(len(ws) - n + 1):
                digest = keys.word_digest(" ".join(ws[i:i + n]))
                recs[pack_record(VIEW_WORD, kind(i, i + n - 1), n, digest)] = None
            starts = list(accumulate((len(w) for w in ws), initial=0))  # char offset per word
            for i, pos in enumerate(starts[:-1]):  # one gram per word start with a full gram ahead
                if pos + C <= len(chars):
                    last = bisect_left(starts, pos + C) - 1  # the word the gram ends in
                    cut = pos + C - starts[last]  # letters of the last word inside the gram
                    recs.update(dict.fromkeys(char_records(kind(i, last, cut), chars[pos:pos + C],
                                                           keys.char_digest, C, variants)))
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
        context: set[str] | None = None
        for p in found:
            if p[KIND_EXACT]:
                return min(p[KIND_EXACT])  # forget ids sort by time: the earliest forget
            owners = p[KIND_CONTEXT]
            if owners:
                # A template gram can belong to thousands of forgets: walk the few subjects in
                # context (named by the prompt or earlier output, or by this very word) instead.
                if context is None:
                    names = [q[KIND_NAME] for q in found if q[KIND_NAME]]
                    context = flags.context.union(*names) if names else flags.context
                for fid in context:
                    if fid in owners:
                        return fid
        return None

"""GuardSession: the hold-back buffer and hit policy for one request's output.

`push` takes each detokenized delta (str, or bytes that may end inside a UTF-8 sequence), lets the
scanner and stages look at only the new text, and returns the prefix that no future match can
reach back into: the last n-1 words plus the word in progress, every word starting within
char_gram-1 letters of it, and — while the semantic stage may check — the current sentence.
On a hit with policy "end" the held text is discarded and the neutral message is the last
release; with "redact" the held text is replaced by one neutral marker per run of hits and the
stream goes on. Nothing that reveals what matched is ever emitted.

One session per stream, used from one thread at a time. Does not know the model or the server.
"""

from __future__ import annotations

import codecs
import logging
from typing import Callable, Sequence

from server.guard.config import GuardConfig
from server.guard.index import GuardIndex, Postings
from server.guard.keys import GuardKeys
from server.guard.scanner import LexicalScanner
from server.guard.stages.base import OutputFilter, SessionFlags
from server.guard.values import GuardHit, GuardStep

logger = logging.getLogger(__name__)
_NOTHING = GuardStep("")
_PROMPT_TAIL = 256  # raw chars of the prompt kept as context: > n-1 words and a char gram


class GuardSession:
    def __init__(self, config: GuardConfig, index: GuardIndex, keys: GuardKeys,
                 stages: Sequence[OutputFilter], report: Callable[[GuardHit], None],
                 flags: SessionFlags, prompt: str = "") -> None:
        self._cfg = config
        self._index = index
        self._report = report
        self._flags = flags
        self._posting = [(s, s.start(flags)) for s in stages]
        # Only stages that override holds_sentences ever look at sentences (the semantic one);
        # the word-end path then skips the others without a call.
        self._sentence = [(s, st) for s, st in self._posting if type(s).holds_sentences
                          is not OutputFilter.holds_sentences]
        self._scanner = LexicalScanner(index, keys, config.n, config.char_gram,
                                       config.max_word_chars, config.semantic_max_sentence_words,
                                       self)
        if prompt:
            self._scanner.seed(prompt[-_PROMPT_TAIL:])
        self._raw = ""  # unreleased raw text, starting at absolute offset _raw_pos
        self._raw_pos = 0
        self._raw_end = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._version = index.version
        self._stopped = False
        self._ended = False
        self._redacting = False
        self._pending = ""  # redaction marker not yet returned
        self._step_hit: GuardHit | None = None

    # ------------------------------------------------------------------ public
    def push(self, delta: str | bytes) -> GuardStep:
        """Feed generated text; returns what is safe to send now."""
        if self._ended:
            return GuardStep("", None, True)
        if isinstance(delta, (bytes, bytearray)):
            if self._decoder is None:
                self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            delta = self._decoder.decode(bytes(delta))
        version = self._index.version
        if version != self._version:  # entries arrived: re-check what is still held
            self._version = version
            self._scanner.rescan(self._hold())
        if delta and not self._stopped:
            events = self._scanner.events
            self._feed(delta)
            if (self._scanner.events == events and not (self._stopped or self._pending)
                    and not self._index.empty):
                return _NOTHING  # no word ended: the hold point cannot have moved
        return self._step(final=False)

    def finish(self) -> GuardStep:
        """End of generation: flush the hold-back (after the last word and sentence are checked)."""
        if self._ended:
            return GuardStep("", None, True)
        if self._decoder is not None and not self._stopped:
            tail = self._decoder.decode(b"", final=True)  # a dangling partial character
            if tail:
                self._feed(tail)
        if not self._stopped:
            self._scanner.finish(self._raw_end)
        return self._step(final=True)

    def _feed(self, delta: str) -> None:
        start = self._raw_end
        self._raw += delta
        self._raw_end += len(delta)
        self._scanner.feed(delta, start)

    @property
    def armed(self) -> bool:
        return self._flags.armed

    @property
    def held_chars(self) -> int:
        return len(self._raw)

    # ------------------------------------------------------------------ scanner sink
    def on_postings(self, pos: int, found: list[Postings], raw_at: int) -> bool:
        for stage, state in self._posting:
            if stage.kinds:
                fid = stage.on_postings(state, self._flags, pos, found)
                if fid is not None:
                    return self._hit(fid, stage.name, raw_at)
        return False

    def on_sentence(self, first: int, end: int, raw_at: int) -> bool:
        for stage, state in self._sentence:
            if stage.holds_sentences(state, self._flags):
                text = self._scanner.sentence_text(first, end)
                fid = stage.on_sentence(state, self._flags, text)
                if fid is not None:
                    return self._hit(fid, stage.name, raw_at)
        return False

    # ------------------------------------------------------------------ internals
    def _hit(self, fid: str, stage: str, raw_at: int) -> bool:
        hit = GuardHit(fid, stage, self._index.phases.get(fid, "before_adapter"))
        if self._cfg.policy == "end":
            self._stopped = True
            self._step_hit = hit
            self._report(hit)
            return True
        # redact: drop everything unreleased up to here; one marker per run of hits
        cut = self._raw_end if raw_at < 0 else raw_at
        if cut > self._raw_pos:
            self._raw = self._raw[cut - self._raw_pos:]
            self._raw_pos = cut
        if not self._redacting:
            self._redacting = True
            self._pending += self._cfg.redaction_text
            self._step_hit = hit
            self._report(hit)
        return False

    def _hold(self) -> int:
        sc = self._scanner
        h = sc.hold_from()
        for s, st in self._sentence:
            if s.holds_sentences(st, self._flags):
                return min(h, sc.sentence_start)
        return h

    def _step(self, final: bool) -> GuardStep:
        hit, self._step_hit = self._step_hit, None
        if self._stopped:
            self._ended = True
            self._raw = ""
            return GuardStep(self._cfg.neutral_message, hit, True)
        if final:
            cut = self._raw_end
            self._ended = True
        else:
            sc = self._scanner
            # With nothing forgotten nothing can match: stream as generated. Entries added later
            # apply from the next push on, like any Forget that arrives mid-stream.
            h = sc.nchars if self._index.empty else self._hold()
            cut = self._raw_end if h >= sc.nchars else max(sc.raw_of(h), self._raw_pos)
            if cut == self._raw_pos and hit is None and not self._pending:
                return _NOTHING
        text = self._raw[:cut - self._raw_pos]
        self._raw = self._raw[cut - self._raw_pos:]
        self._raw_pos = cut
        if text:
            self._redacting = False
        out, self._pending = self._pending + text, ""
        return GuardStep(out, hit, False)

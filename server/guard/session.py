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
import re
from typing import Callable, Sequence

from server.guard.config import GuardConfig
from server.guard.decoded import DECODED, DecodedRuns
from server.guard.encodings import LEET, LEET_GATE
from server.guard.escapes import IDLE_CHARS, EscapedBytes
from server.guard.index import GuardIndex, Postings
from server.guard.keys import GuardKeys
from server.guard.scanner import LexicalScanner
from server.guard.stages.base import OutputFilter, SessionFlags
from server.guard.subject_policy import says_anything, value_near
from server.guard.values import GuardHit, GuardStep

logger = logging.getLogger(__name__)
_NOTHING = GuardStep("")
_LEET_SYMBOLS = frozenset("@$|")
_ESCAPE_MARKS = frozenset("%\\")
_MARKS = re.compile(r"[@$|%\\]")  # either kind: most deltas have none, one search says so
# A step per released chunk: built as the plain tuple it is (a NamedTuple's own __new__ is
# interpreted Python even when this module is compiled).
_new_tuple = tuple.__new__
_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}[ :,-]{1,2}(?:0[xX])?[0-9A-Fa-f]{2}")  # "4d:61", "0x4d, 0x61"
_LEET_TAIL = 128  # released raw chars kept as leet context: > the entity window (80 letters)
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
        # Only stages that override holds_sentences ever look at sentences (the semantic one),
        # and only when it is enabled: the word-end path then skips the others without a call.
        self._sentence = [(s, st) for s, st in self._posting if type(s).holds_sentences
                          is not OutputFilter.holds_sentences] if config.semantic_enabled else []
        self._scanner = LexicalScanner(index, keys, config.n, config.char_gram,
                                       config.max_word_chars, config.semantic_max_sentence_words,
                                       self)
        if prompt:
            self._scanner.seed(prompt[-_PROMPT_TAIL:])
        # Hidden channels: a leet-folded char view (encodings.py) and decoded base64/32/hex runs
        # (decoded.py). Each has its own stage states (their letter offsets are not the main view's).
        enc = config.encodings
        self._leet_on = "leet" in enc
        # Started when a word mixes letters and digits ("k0walczyk") or @ $ | appear: plain words
        # and plain numbers ("14 March 1972") look the same to both views.
        self._leet: LexicalScanner | None = None
        self._mixed = 0  # the main scanner's mixed-word count when the leet view last looked
        self._tail = ""  # the last released chars, context for a leet view that starts later
        self._runs: DecodedRuns | None = None
        # Byte escapes (%4A, \x4a, 0x4a, "4d:61:72"): a view started at % or \ or at two
        # hex-pair words in a row, dropped once no escape was seen for a while.
        self._esc_on = "escapes" in enc
        self._esc: EscapedBytes | None = None
        if any(e in enc for e in DECODED):
            sink = _ViewSink(self, stages, flags, raw_at=self._runs_end)
            self._runs = DecodedRuns(enc, config.encoded_min_chars, lambda: LexicalScanner(
                index, keys, config.n, config.char_gram, config.max_word_chars, 1 << 30, sink),
                self._held_text, config.encoded_depth)
        self._keys = keys
        self._stages = stages
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
        # Subject policy (subject_policy.py): listed names sighted under "value", each with the
        # raw offset where it ended, checked for a value word within the window on both sides;
        # and how far the output was checked when the prompt named a listed subject.
        self._subject_on = config.subject_policy != "off"
        self._watch: list[tuple[str, int]] = []
        self._subject_checked = 0

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
            self._rescan()
        if delta and not self._stopped:
            # Only word ends (and decoded-run events) can move the hold point. The leet view
            # ends words where the main view does (give or take @ $ |): not counted.
            sc, runs = self._scanner, self._runs
            events = sc.events + (runs.events if runs is not None else 0)
            self._feed(delta)
            flags = self._flags
            if self._subject_on and not self._stopped and (
                    self._watch or flags.subjects_seen or flags.prompt_subjects):
                self._subject_step(self._words_done())
            if (sc.events + (runs.events if runs is not None else 0) == events
                    and not (self._stopped or self._pending) and not self._index.empty):
                return _NOTHING
        return self._step(final=False)

    def finish(self) -> GuardStep:
        """End of generation: flush the hold-back (after the last word and sentence are checked)."""
        if self._ended:
            return GuardStep("", None, True)
        if self._decoder is not None and not self._stopped:
            tail = self._decoder.decode(b"", final=True)  # a dangling partial character
            if tail:
                self._feed(tail)
        end = self._raw_end
        if not self._stopped:
            # The main view's last word may be the first mixed one: the leet view starts now.
            (self._scanner.finish(end) or (self._leet_on and self._feed_leet("", end, final=True))
             or (self._esc is not None and self._esc.finish(end))
             or (self._runs is not None and self._runs.finish(end)))
        flags = self._flags
        if self._subject_on and not self._stopped and (
                self._watch or flags.subjects_seen or flags.prompt_subjects):
            self._subject_step(end)
        return self._step(final=True)

    def _feed(self, delta: str) -> None:
        start = self._raw_end
        self._raw += delta
        self._raw_end += len(delta)
        sc = self._scanner
        if sc.feed(delta, start):
            return
        marks = _MARKS.search(delta) is not None
        if self._leet_on and (self._leet is not None or sc.mixed != self._mixed
                              or (marks and not _LEET_SYMBOLS.isdisjoint(delta))) and self._feed_leet(delta, start):
            return
        if self._esc_on and (self._esc is not None or (marks and not _ESCAPE_MARKS.isdisjoint(delta))
                             or (sc.hexpairs >= 2 and _HEX_PAIRS.search(self._raw, len(self._raw) - 32))
                             ) and self._feed_esc(delta, start):
            return
        if self._runs is not None:
            self._runs.feed(delta, start)

    def _feed_esc(self, delta: str, start: int) -> bool:
        """Like the leet view: starts from the released tail and the held text, then follows
        the stream until no escape was seen for IDLE_CHARS raw chars."""
        ev = self._esc
        if ev is None:
            ev = self._esc = EscapedBytes(LexicalScanner(
                self._index, self._keys, self._cfg.n, self._cfg.char_gram,
                self._cfg.max_word_chars, 1 << 30, _ViewSink(self, self._stages, self._flags)))
            tail = self._tail[-_LEET_TAIL:]
            context = tail + self._raw[:len(self._raw) - len(delta)]
            if context and ev.feed(context, self._raw_pos - len(tail)):
                return True
        if ev.feed(delta, start):
            return True
        if start + len(delta) - ev.last_escape > IDLE_CHARS:
            self._esc = None
            return ev.finish(start + len(delta))
        return False
    def _feed_leet(self, delta: str, start: int, final: bool = False) -> bool:
        """The leet view runs only near leet (elsewhere it would see what the main view sees). It
        starts from the held text — the main hold keeps every word start that a gram through the
        new word could begin at — and stops once the last digit or symbol is a char gram behind.
        "!" alone does not start it (sentence ends); inside an active view it folds to i."""
        lv = self._leet
        if lv is None:
            mixed = self._scanner.mixed
            if mixed == self._mixed and _LEET_SYMBOLS.isdisjoint(delta):
                return False  # plain words and plain numbers: nothing the main view misses
            self._mixed = mixed
            lv = self._leet = LexicalScanner(self._index, self._keys, 1, self._cfg.char_gram,
                                             self._cfg.max_word_chars, 1 << 30,
                                             _ViewSink(self, self._stages, self._flags),
                                             table=LEET, gate=LEET_GATE)
            # Context: the tail of what was released (a name there still pairs with a leet
            # attribute, entity window) and what is held, checked like any text of this view.
            held = self._raw[:len(self._raw) - len(delta)]
            tail = self._tail[-_LEET_TAIL:]
            context = tail + held
            if context and lv.feed(context, self._raw_pos - len(tail)):
                return True
        if final:
            return lv.finish(start)
        if lv.feed(delta, start):
            return True
        if lv.gate_passed:
            self._leet = None
            self._mixed = self._scanner.mixed
        return False

    def _runs_end(self) -> int:
        return self._runs.fed_end if self._runs is not None else self._raw_end

    def _held_text(self, start: int, end: int) -> str:
        lo = max(start, self._raw_pos) - self._raw_pos
        return self._raw[lo:end - self._raw_pos]

    def _rescan(self) -> None:
        (self._scanner.rescan(self._hold())
         or (self._leet is not None and self._leet.rescan(self._leet.hold_from()))
         or (self._esc is not None and self._esc.scanner.rescan(self._esc.scanner.hold_from()))
         or (self._runs is not None and self._runs.rescan()))

    @property
    def armed(self) -> bool:
        return self._flags.armed

    @property
    def may_embed(self) -> bool:
        """Whether the next push (or finish) may run the sentence embedder — milliseconds, so an
        async caller should run it off its event loop; otherwise a push is lexical (microseconds).
        Exception: a delta that both names a subject and ends its sentence embeds in that push."""
        return not self._ended and any(s.holds_sentences(st, self._flags)
                                       for s, st in self._sentence)

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
        if self._flags.subjects_seen:  # a listed name just ended: look back now
            return self._subject_step(raw_at if raw_at >= 0 else self._raw_end)
        return False

    def on_sentence(self, first: int, end: int, raw_at: int) -> bool:
        for stage, state in self._sentence:
            if stage.holds_sentences(state, self._flags):
                text = self._scanner.sentence_text(first, end)
                fid = stage.on_sentence(state, self._flags, text)
                if fid is not None:
                    return self._hit(fid, stage.name, raw_at)
        return False

    # ------------------------------------------------------------------ subject policy
    def _words_done(self) -> int:
        """Raw offset up to which words are complete (the word in progress excluded)."""
        raw = self._raw
        i = len(raw)
        while i > 0 and raw[i - 1].isalnum():
            i -= 1
        return self._raw_pos + i

    def _subject_step(self, done: int) -> bool:
        """Check complete words up to raw offset `done` against the subject policy."""
        flags, cfg = self._flags, self._cfg
        if flags.subjects_seen:
            at = min(done, self._raw_end)
            self._watch += [(fid, at) for fid in flags.subjects_seen]
            flags.subjects_seen.clear()
        # The released tail (kept while the policy is on) and the held text: the window may
        # reach back into text already sent, never forward past what was generated.
        text = self._tail + self._raw
        base = self._raw_pos - len(self._tail)
        if flags.prompt_subjects and done > self._subject_checked:
            lo = max(self._subject_checked, base)
            self._subject_checked = done
            if says_anything(cfg.subject_policy, text, lo - base, done - base):
                return self._hit(min(flags.prompt_subjects), "entity", done)
        window = cfg.entity_window_chars
        keep: list[tuple[str, int]] = []
        for i, (fid, at) in enumerate(self._watch):
            if value_near(text, at - base, max(at - window, base) - base, min(at + window, done) - base):
                self._watch = keep + self._watch[i + 1:]  # a redacted name is not watched again
                return self._hit(fid, "entity", done)
            if at + window > done:
                keep.append((fid, at))
        self._watch = keep
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
            self._tail = ""  # no longer adjacent to what stays
            self._raw = self._raw[cut - self._raw_pos:]
            self._raw_pos = cut
        if not self._redacting:
            self._redacting = True
            self._pending += self._cfg.redaction_text
            self._step_hit = hit
            self._report(hit)
        return False

    def _hold_raw(self) -> int:
        """Raw offset from which nothing may be released yet: the earliest over all views."""
        sc = self._scanner
        if self._sentence:
            h = self._hold()
            cut = self._raw_end if h >= sc.nchars else sc.raw_of(h)
        else:
            cut = min(self._raw_end, sc.hold_raw())
        if self._leet is not None:
            cut = min(cut, self._leet.hold_raw())
        if self._esc is not None:
            cut = min(cut, self._esc.hold_raw())
        if self._runs is not None:
            cut = min(cut, self._runs.hold_raw())
        return cut

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
            # With nothing forgotten nothing can match: stream as generated. Entries added later
            # apply from the next push on, like any Forget that arrives mid-stream.
            cut = self._raw_end if self._index.empty else max(self._hold_raw(), self._raw_pos)
            if cut == self._raw_pos and hit is None and not self._pending:
                return _NOTHING
        text = self._raw[:cut - self._raw_pos]
        self._raw = self._raw[cut - self._raw_pos:]
        self._raw_pos = cut
        if text:
            self._redacting = False
            if self._leet_on or self._esc_on or self._subject_on:
                tail = self._tail + text
                self._tail = tail if len(tail) < 2 * _LEET_TAIL else tail[-_LEET_TAIL:]
        out, self._pending = self._pending + text, ""
        return _new_tuple(GuardStep, (out, hit, False))


class _ViewSink:
    """Scanner sink for a side view (leet, decoded runs): the session's stages with their own
    per-view state, no sentences (the semantic stage reads the main view only). A decoded view's
    offsets are per group, so its hits cut at `raw_at()`: the end of the run text decoded so far
    (a redaction then covers the whole encoded span up to there)."""

    __slots__ = ("_session", "_posting", "_flags", "_raw_at")

    def __init__(self, session: GuardSession, stages: Sequence[OutputFilter], flags: SessionFlags,
                 raw_at: Callable[[], int] | None = None) -> None:
        self._session = session
        self._flags = flags
        self._posting = [(s, s.start(flags)) for s in stages if s.kinds]
        self._raw_at = raw_at

    def on_postings(self, pos: int, found: list[Postings], raw_at: int) -> bool:
        for stage, state in self._posting:
            fid = stage.on_postings(state, self._flags, pos, found)
            if fid is not None:
                return self._session._hit(fid, stage.name,
                                          raw_at if self._raw_at is None else self._raw_at())
        return False

    def on_sentence(self, first: int, end: int, raw_at: int) -> bool:
        return False

"""LexicalScanner: incremental folding, word / character windows and digest lookups for one stream.

The hot path. Each pushed delta is folded code point by code point (no look-ahead needed, see
normalize.py) and only the new characters are touched. When a word completes, at most one word
n-gram and a few anchored character grams are hashed and looked up:

* word view — the last n words joined by one space;
* char view — the letters-and-digits stream with word boundaries erased, anchored at word starts:
  a `char_gram`-long gram from each recent word start whose end falls in this word, and the whole
  span from a recent word start to this word's end when some entry has exactly that length
  (short items: names, attributes, short answers). Inserting separators ("J o h n", "J-o-h-n",
  markdown) only adds word starts, so the anchors of the original text are still there.

Hits are handed to a sink (the session), which owns policy. The scanner also answers the one
question the hold-back needs: from which character on could a future match still reach back?
It never releases text itself and knows nothing about stages beyond posting kinds.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from typing import Protocol

from server.guard.index import GuardIndex, Postings
from server.guard.entries import PREFIX_CHARS
from server.guard.keys import GuardKeys
from server.guard.normalize import LINE_BREAKS, SENTENCE_END, fold_char

_WORD, _SEP, _END, _SPACE, _BREAK = 0, 1, 2, 3, 4
NOTHING_HELD = 1 << 62  # hold_raw() when no char needs holding
_CLASS: dict[str, int] = {}


def _classify(c: str) -> int:
    k = _CLASS.get(c)
    if k is None:
        if c.isalnum():
            k = _WORD
        elif c in SENTENCE_END:
            k = _END
        elif c in LINE_BREAKS:
            k = _BREAK
        elif c.isspace():
            k = _SPACE
        else:
            k = _SEP
        if len(_CLASS) < 65536:
            _CLASS[c] = k
    return k


for _i in range(128):
    _classify(chr(_i))
_ASCII_ALNUM = frozenset(c for c in map(chr, range(128)) if c.isalnum())
_ASCII_RUNS = re.compile(r"[a-z0-9]+|[^a-z0-9]", re.DOTALL)  # on lowercased ASCII
# Folded words that may be one escaped byte ("4d", "0x4d"): two in a row start the escape view.
_HEX_WORDS = frozenset(p + f"{b:02x}" for b in range(256) for p in ("", "0x"))



def _first_at_least(ws: list[int], x: int, hi: int) -> int:
    """bisect_left(ws, x, 0, hi) for an answer near `hi`: word starts ascend and the hot callers
    ask about the last char gram or n-gram, a few words back (compiled, these compares are on
    native ints; bisect's are rich compares of boxed ones). The list is trimmed, so a far
    answer costs at most a few hundred steps."""
    k = hi
    while k > 0 and ws[k - 1] >= x:
        k -= 1
    return k


class ScanSink(Protocol):
    def on_postings(self, pos: int, found: list[Postings], raw_at: int) -> bool: ...
    def on_sentence(self, first_word: int, end_word: int, raw_at: int) -> bool: ...


class LexicalScanner:
    __slots__ = ("_index", "_wk", "_ck", "_n", "_C", "_max_word", "_max_sent", "_sink",
                 "_cbuf", "_cbase", "_wraw", "_cur_raw", "_ws", "_we", "_wtxt", "_wflag", "_cand", "_ends", "_starts", "_wbase",
                 "_cur", "_nchars", "_sent_word", "_sent_char", "_term", "checking", "events",
                 "_table", "_gate", "_gate_at", "mixed", "hexpairs", "_short", "_short_get")

    def __init__(self, index: GuardIndex, keys: GuardKeys, n: int, char_gram: int,
                 max_word_chars: int, max_sentence_words: int, sink: ScanSink,
                 table: dict[int, str] | None = None, gate: frozenset[str] | None = None) -> None:
        """`n` <= 1 turns the word view off. `table` re-maps folded chars one to one before
        anything else (the leet view); with `gate`, lookups run only for grams that may contain
        one of those (folded, un-mapped) chars — the only grams where this view can differ."""
        self._index = index
        self._table = table
        self._gate: frozenset[str] = gate if gate is not None else frozenset()
        # Upper bound on the char index of the last gate char seen (no gate: always open).
        self._gate_at = -(1 << 62) if gate is not None else 1 << 62
        self._wk = keys.word_proto.copy  # bound: a fresh keyed state per digest
        self._ck = keys.char_proto.copy
        self._short = keys.short_char_digest  # 3-letter prefix / suffix digests, cached
        self._short_get = keys.short_char.get
        self._n = n
        self._C = char_gram
        self._max_word = max_word_chars
        self._max_sent = max_sentence_words
        self._sink = sink
        self._cbuf = ""  # folded letters/digits; absolute index of _cbuf[0] is _cbase
        self._cbase = 0
        self._ws: list[int] = []  # absolute start char of each retained word
        self._we: list[int] = []  # absolute end char (exclusive)
        self._wtxt: list[str] = []  # the folded word itself (joined for word n-grams)
        # Raw offset where each retained word starts (-1: came from the prompt). Only word starts
        # are ever asked for (every hold point is one), so no per-char offsets are kept.
        self._wraw: list[int] = []
        # Per retained word: lengths of the short entries that start with the letters at this
        # word start (bitmask); None = not asked yet — asked lazily, once per word start.
        self._wflag: list[int | None] = []
        # Absolute indices of recent word starts whose prefix was not asked yet.
        self._cand: list[int] = []
        # Bit i set: a short entry whose prefix matches a retained word start would end at char
        # _cbase + i (start + one of its lengths). Stale bits only cost a visit.
        self._ends = 0
        self._starts = 0  # bit i set: a word start at char _cbase + i with a nonzero prefix mask
        self._wbase = 0  # absolute index of the word _ws[0]
        self._cur = -1  # start char of the word in progress; -1 between words
        self._cur_raw = -1  # its raw offset
        self._nchars = 0
        self._sent_word = 0  # first word of the current sentence
        self._sent_char = 0  # first char of the current sentence
        self._term = False  # saw . ! ? - the sentence ends if whitespace follows
        self.checking = True
        # Bumps when a word or sentence ends: only then can the hold point move (a word start
        # sits exactly where the hold point already was).
        self.events = 0
        self.mixed = 0  # completed words with both letters and digits ("k0walczyk"): leet hints
        self.hexpairs = 0  # completed words in a row that look like one hex byte: escape hints

    # ------------------------------------------------------------------ feeding
    def feed(self, text: str, raw_pos: int) -> bool:
        """Scan `text`, whose first char is at raw offset `raw_pos`. True = the sink said stop."""
        if text.isascii():
            # ASCII folds char for char (lower()). Most tokens are "word" or " word": take the
            # run at once; anything else goes char by char.
            t = text.lower()
            if self._table is not None:
                if not self._gate.isdisjoint(t):
                    self._gate_at = self._nchars + len(t)
                t = t.translate(self._table)
            if t.isalnum():
                return self._word_chars(t, raw_pos)
            if t[0] == " " and t[1:].isalnum():
                return self._separator(" ", raw_pos, _SPACE) or self._word_chars(t[1:], raw_pos + 1)
            if len(t) > 16:  # a prompt or a big delta: take letter/digit runs at once
                for m in _ASCII_RUNS.finditer(t):
                    run, i = m.group(), raw_pos + m.start()
                    if run[0] in _ASCII_ALNUM:
                        if self._word_chars(run, i):
                            return True
                    elif self._separator(run, i, _CLASS[run]):
                        return True
                return False
            cls = _CLASS
            for i, c in enumerate(t):
                if cls[c] == _WORD:
                    if self._word_chars(c, raw_pos + i):
                        return True
                elif self._separator(c, raw_pos + i, cls[c]):
                    return True
            return False
        table = self._table
        for i, ch in enumerate(text):
            f = fold_char(ch)
            if table is not None:
                if not self._gate.isdisjoint(f):
                    self._gate_at = self._nchars + len(f)
                f = f.translate(table)
            for c in f:
                k = _CLASS.get(c)
                if k is None:
                    k = _classify(c)
                if k == _WORD:
                    if self._word_chars(c, raw_pos + i):
                        return True
                elif self._separator(c, raw_pos + i, k):
                    return True
        return False

    def _word_chars(self, run: str, raw: int) -> bool:
        """Letters/digits `run` (folded), the first from raw offset `raw`, one raw char each
        for ASCII runs (non-ASCII runs are one folded char at a time)."""
        if self._cur < 0:
            self._cur = self._nchars
            self._cur_raw = raw
            self._term = False  # "3.5", "e.g": no sentence end
        n = len(run)
        room = self._max_word - (self._nchars - self._cur)
        if n > room:  # cut an endless "word" so the hold-back stays bounded
            return self._word_chars(run[:room], raw) or self._end_word(raw + room) or \
                self._word_chars(run[room:], raw + room)
        self._cbuf += run
        self._nchars += n
        return False

    def _separator(self, c: str, raw: int, k: int = -1) -> bool:
        if k < 0:
            k = _classify(c)
        if self._cur >= 0 and self._end_word(raw):
            return True
        if k == _END:
            self._term = True
        elif k == _BREAK or (k == _SPACE and self._term):
            return self._end_sentence(raw)
        return False

    def finish(self, raw_end: int) -> bool:
        """End of stream: complete the last word and sentence."""
        stop = self._end_word(raw_end) if self._cur >= 0 else False
        return self._end_sentence(raw_end) or stop

    def seed(self, text: str) -> None:
        """Load the prompt's tail as context: grams that start in the prompt and end in the
        output are checked (a prompt that supplies a prefix and asks to continue)."""
        self.checking = False
        self.feed(text, -1)
        self._wraw = [-1] * len(self._wraw)
        self._cur_raw = -1
        if self._cur >= 0:
            self._end_word(-1)
        self._end_sentence(-1)
        self.checking = True

    # ------------------------------------------------------------------ words and sentences
    def _end_word(self, raw_at: int) -> bool:
        a, base, ws = self._cur, self._cbase, self._ws
        ws.append(a)
        self._wraw.append(self._cur_raw)
        self._we.append(self._nchars)
        w = self._cbuf[a - base:]
        self._wtxt.append(w)
        if not (w.isalpha() or w.isdigit()):
            self.mixed += 1
        if w in _HEX_WORDS:
            self.hexpairs += 1
        elif self.hexpairs:
            self.hexpairs = 0
        if not self._index.short_lengths:
            self._wflag.append(None)  # asked by a re-check once short entries exist
        elif len(w) >= PREFIX_CHARS:
            # Which short entries start with this word's letters, and how long are they? Asked
            # here, once; `_ends` marks where such an entry would end.
            p3 = w[:PREFIX_CHARS]
            mask = self._index.prefix.get(self._short_get(p3) or self._short(p3), 0)
            self._wflag.append(mask)
            if mask:
                self._ends |= mask << (a - base)
                self._starts |= 1 << (a - base)
        else:  # a 1-2 letter word: asked once later words bring enough letters ("J o h n")
            self._wflag.append(None)
            self._cand.append(self._wbase + len(ws) - 1)
        self._cur = -1
        self.events += 1
        j = len(self._ws) - 1
        stop = False
        if self.checking:
            if self._gate_at >= self._nchars - self._C:
                postings = self._lookup(j)
                if postings:
                    stop = self._sink.on_postings(self._nchars, postings, raw_at)
            elif len(self._cand) > 32:  # gated off: starts that fell out of reach go
                lo, ws, wb = self._nchars - self._C, self._ws, self._wbase
                self._cand = [k for k in self._cand if k >= wb and ws[k - wb] > lo]
            if self._wbase + j + 1 - self._sent_word >= self._max_sent:
                stop = self._end_sentence(raw_at) or stop  # keeps an armed hold bounded
        if j > 4 * self._n + 64 or len(self._cbuf) > 4096:
            self._trim()
        return stop

    def _end_sentence(self, raw_at: int) -> bool:
        self._term = False
        first, end = self._sent_word, self._wbase + len(self._ws)
        self._sent_word = end
        self._sent_char = self._nchars if self._cur < 0 else self._cur
        self.events += 1
        if end > first and self.checking:
            return self._sink.on_sentence(first, end, raw_at)
        return False

    def _lookup(self, j: int, fast: bool = True) -> list[Postings] | None:
        """Digest lookups for everything that ends with retained word j.

        `fast` (the streaming path) looks for short entries only where `_ends` says one could end;
        a re-check (`fast=False`, prefix answers reset) visits every word start in reach."""
        index = self._index
        ws, cb, base = self._ws, self._cbuf, self._cbase
        s, e = ws[j], self._we[j]
        found: list[Postings] = []
        n = self._n
        if j + 1 >= n and n in index.word_lengths:
            h = self._wk()
            h.update(" ".join(self._wtxt[j - n + 1:j + 1]).encode())
            p = index.word.get(h.digest())
            if p:
                found.append(p)
        C, ck, table = self._C, self._ck, index.char
        if index.has_long_chars:
            # char grams that end inside word j start at word starts in [s - C + 1, e - C]
            for k in range(_first_at_least(ws, s - C + 1, j + 1), _first_at_least(ws, e - C + 1, j + 1)):
                h = ck()
                h.update(cb[ws[k] - base:ws[k] - base + C].encode())
                p = table.get(h.digest())
                if p:
                    found.append(p)
        if not index.short_lengths:
            return found or None
        flags, prefix, wbase = self._wflag, index.prefix, self._wbase
        short, short_get = self._short, self._short_get
        if fast:
            # Ask the prefix digests of word starts that now have enough letters, once each, and
            # mark where a short entry starting there would end (`_ends`, bit = char - _cbase).
            # Most word ends then need one shift and test, no loop.
            pending, ends_at = self._cand, self._ends
            if pending:
                keep = []
                for kabs in pending:
                    k = kabs - wbase
                    if k < 0 or k > j:
                        continue
                    a = ws[k]
                    L = e - a
                    if L >= C:
                        continue  # too far back for a short entry
                    mask = flags[k]
                    if mask is None:
                        if L < PREFIX_CHARS:  # not enough letters yet to ask
                            keep.append(kabs)
                            continue
                        p3 = cb[a - base:a - base + PREFIX_CHARS]
                        mask = flags[k] = prefix.get(short_get(p3) or short(p3), 0)
                    if mask:
                        ends_at |= mask << (a - base)
                        self._starts |= 1 << (a - base)
                self._cand = keep
                self._ends = ends_at
            if not ends_at >> (e - base) & 1 or e - base < PREFIX_CHARS:
                return found or None
            # Which lengths end with these letters? Their start positions, against the word
            # starts whose prefix fits some entry: usually none or one is left to hash.
            s3 = cb[e - base - PREFIX_CHARS:e - base]
            starts = index.suffix_starts.get(short_get(s3) or short(s3), 0)
            shift = e - base - C
            hits = (starts << shift if shift >= 0 else starts >> -shift) & self._starts
            while hits:
                low = hits & -hits
                hits ^= low
                a = base + low.bit_length() - 1
                L = e - a
                if (flags[_first_at_least(ws, a, j + 1)] or 0) >> L & 1:
                    h = ck()
                    h.update(cb[a - base:e - base].encode())
                    p = table.get(h.digest())
                    if p:
                        found.append(p)
            return found or None
        # Re-check: prefix answers were reset, so visit every word start at a length that ends
        # with these letters.
        if e - base < PREFIX_CHARS:
            return found or None
        s3 = cb[e - base - PREFIX_CHARS:e - base]
        ends = index.suffix.get(short_get(s3) or short(s3), 0)
        if not ends:
            return found or None
        longest, shortest = ends.bit_length() - 1, (ends & -ends).bit_length() - 1
        for k in range(bisect_left(ws, e - longest, 0, j + 1), bisect_right(ws, e - shortest, 0, j + 1)):
            a = ws[k]
            L = e - a
            mask = flags[k]
            if mask is None:
                if L < PREFIX_CHARS:
                    continue
                p3 = cb[a - base:a - base + PREFIX_CHARS]
                mask = flags[k] = prefix.get(short_get(p3) or short(p3), 0)
            if (mask & ends) >> L & 1:
                h = ck()
                h.update(cb[a - base:e - base].encode())  # the whole span up to the end of word j
                p = table.get(h.digest())
                if p:
                    found.append(p)
        return found or None

    def _trim(self) -> None:
        # Keep what a re-check needs: 2n words, 2 char grams, and the current sentence.
        keep = max(0, len(self._ws) - 2 * self._n)
        keep = min(keep, max(0, self._sent_word - self._wbase))
        while keep > 0 and self._ws[keep - 1] >= self._nchars - 2 * self._C:
            keep -= 1
        if keep <= 0:
            return
        del self._ws[:keep], self._we[:keep], self._wtxt[:keep], self._wflag[:keep], self._wraw[:keep]
        self._wbase += keep
        drop = self._ws[0] - self._cbase if self._ws else (
            (self._cur if self._cur >= 0 else self._nchars) - self._cbase)
        if drop > 0:
            self._cbuf = self._cbuf[drop:]
            self._ends >>= drop
            self._starts >>= drop
            self._cbase += drop

    # ------------------------------------------------------------------ queries
    def rescan(self, from_char: int) -> bool:
        """Re-check completed words that end after `from_char` (new entries arrived)."""
        self._wflag = [None] * len(self._ws)  # prefix answers may have changed too
        lo = self._nchars - self._C
        self._cand = [self._wbase + k for k, a in enumerate(self._ws) if a > lo]
        self._ends = 0
        self._starts = 0
        for j in range(len(self._ws)):
            if self._we[j] > from_char:
                postings = self._lookup(j, fast=False)
                if postings and self._sink.on_postings(self._we[j], postings, -1):
                    return True
        return False

    def hold_from(self) -> int:
        """The earliest char a match that is not complete yet could include."""
        ref = self._cur if self._cur >= 0 else self._nchars
        h = ref
        ws = self._ws
        m = len(ws)
        if m:
            # word view: the last n-1 completed words (plus the word in progress)
            if self._n > 1:
                h = min(h, ws[max(0, m - (self._n - 1))])
            # char view: word starts within char_gram-1 chars of the word in progress
            k = _first_at_least(ws, ref - self._C + 1, m)
            if k < m and ws[k] < h:
                h = ws[k]
        return h

    def hold_raw(self) -> int:
        """Raw offset of `hold_from()`, NOTHING_HELD when it is past the text: the per-step form
        (one call, no search for the raw offset)."""
        ws = self._ws
        m = len(ws)
        cur = self._cur
        ref = cur if cur >= 0 else self._nchars
        # Word starts ascend, so the earliest of "the last n-1 words" and "starts within
        # char_gram-1 chars" is the one with the lower index.
        k = _first_at_least(ws, ref - self._C + 1, m)
        if self._n > 1 and m:
            k = min(k, max(0, m - (self._n - 1)))
        if k < m:
            return self._wraw[k]
        return self._cur_raw if cur >= 0 else NOTHING_HELD

    @property
    def gate_passed(self) -> bool:
        """No gram that ends from now on can contain a gate char seen so far."""
        return self._gate_at < self._nchars - self._C

    @property
    def nchars(self) -> int:
        return self._nchars

    @property
    def sentence_start(self) -> int:
        return self._sent_char

    def raw_of(self, char: int) -> int:
        """Raw offset where char `char` came from (-1 for prompt context). `char` must be a word
        start (the word in progress included): every hold point is one."""
        if char == self._cur:
            return self._cur_raw
        return self._wraw[_first_at_least(self._ws, char, len(self._ws))]

    def sentence_text(self, first: int, end: int) -> str:
        lo = max(first, self._wbase) - self._wbase
        hi = end - self._wbase
        return " ".join(self._wtxt[lo:hi])

"""Hidden channels that re-encode bytes: base64, base32 and hex runs, decoded while they stream.

`DecodedRuns` watches the output for runs of an encoding's alphabet. Once a run is long enough
(`encoded_min_chars`) it is decoded from each possible start (a blob cut mid-group or glued to a
word), and the decoded text is scanned by a LexicalScanner of its own, against the same index
and stages. A decoder reading the run at the wrong offset sees noise and stops. Decoded text is
read again for encodings inside encodings (base64 of hex, hex of base64, base64 of URL escapes), up
to `GuardConfig.encoded_depth` layers in all.

Nothing here hashes entries, decides policy or releases text; it only produces text to scan and
says how far back a match that is still forming could reach (`hold_raw`).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import string
from typing import Callable

from server.guard.escapes import EscapedBytes
from server.guard.scanner import LexicalScanner

DECODED = ("base64", "base32", "hex")
_RUN_CHARS = string.ascii_letters + string.digits + "+/=-_"
_RUN = re.compile(r"[A-Za-z0-9+/=_-]+")
_ALPHABETS = {
    "base64": frozenset(_RUN_CHARS),
    "base32": frozenset(string.ascii_uppercase + "234567="),  # RFC 4648 output is upper case
    "hex": frozenset(string.hexdigits),
}
_GROUP = {"base64": 4, "base32": 8, "hex": 2}  # encoded chars per whole number of bytes
# A run glued to a word ("b64TWFydGE"), or cut from a longer blob, starts mid-group: decode it
# from each possible start too. A shifted decoder reading text as noise stops after 48 bytes.
_OFFSETS = {"base64": 4, "base32": 8, "hex": 2}
# Bytes no UTF-8 text contains (C0 controls but tab / newlines / CR, DEL, C0, C1, F5-FF), and
# sequences that do not decode: frequent in noise, absent from text. A shifted decoder with more
# than 5 % of them in 48+ bytes is reading noise.
_NOT_IN_TEXT = bytes(range(9)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20)) + b"\x7f\xc0\xc1" + \
    bytes(range(0xF5, 0x100))
_NOISE_AFTER = 48
_URLSAFE = str.maketrans("-_", "+/")
_INF = 1 << 62


def _decode(name: str, block: str) -> bytes:
    if name == "base64":
        return binascii.a2b_base64(block.translate(_URLSAFE))
    if name == "base32":
        return base64.b32decode(block)
    return binascii.unhexlify(block)


def _pad(name: str, rest: str) -> str:
    """The tail of a run that ended mid-group, made decodable (or "" when it carries no byte)."""
    if name == "base64" and len(rest) >= 2:
        return rest + "=" * (-len(rest) % 4)
    if name == "base32" and len(rest) >= 2:
        full = {2: 1, 4: 2, 5: 3, 7: 4}.get(len(rest))  # encoded chars -> whole bytes they carry
        if full is None:
            rest = rest[:max(k for k in (2, 4, 5, 7) if k <= len(rest))]
        return rest + "=" * (8 - len(rest))
    if name == "hex":
        return rest[:len(rest) // 2 * 2]
    return ""


class _Decoder:
    """One encoding applied to one run: decodes whole groups as they arrive and feeds the text to
    its own scanner. Each decoded char is fed at the raw offset of its group's start plus its
    index in the group — never later than the first encoded char that carries its bits."""

    __slots__ = ("name", "group", "alphabet", "scanner", "pending", "pending_raw", "utf8",
                 "partial_raw", "dead", "skip", "inner", "shifted", "seen", "bad")

    def __init__(self, name: str, scanner: LexicalScanner, skip: int = 0,
                 inner: _Inner | None = None) -> None:
        self.name = name
        self.inner = inner  # the decoded text read again for a second encoding (nesting)
        self.skip = skip  # leading run chars that belong to a group begun before the run
        # A decoder reading the run at the wrong offset turns text into noise: once it has shown
        # bytes that no UTF-8 text contains, it stops (the aligned one never does).
        self.shifted = skip > 0
        self.seen = self.bad = 0
        self.group = _GROUP[name]
        self.alphabet = _ALPHABETS[name]
        self.scanner = scanner
        self.pending = ""  # encoded chars not decoded yet (less than a group)
        self.pending_raw = -1  # raw offset of pending[0]
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.partial_raw = -1  # raw offset where a multi-byte char still being decoded began
        self.dead = False

    def push(self, chars: str, raw: int) -> bool:
        if self.dead:
            return False
        if not self.alphabet.issuperset(chars):
            return self.close(raw)  # the run left this encoding's alphabet: not this encoding
        if self.name == "base64" and "=" in chars:  # padding: only the data before it counts
            chars = chars.replace("=", "")
        if self.skip:
            k = min(self.skip, len(chars))
            self.skip -= k
            chars, raw = chars[k:], raw + k
            if not chars:
                return False
        if not self.pending:
            self.pending_raw = raw
        self.pending += chars
        full = len(self.pending) // self.group * self.group
        if not full:
            return False
        block, self.pending = self.pending[:full], self.pending[full:]
        base = self.pending_raw
        self.pending_raw = base + full
        return self._emit(block, base, final=False)

    def _emit(self, block: str, base: int, final: bool) -> bool:
        try:
            data = _decode(self.name, block)
        except (binascii.Error, ValueError):
            self.dead = True  # not valid in this encoding after all
            return False
        shifted = self.shifted
        if shifted:
            self.seen += len(data)
            self.bad += len(data) - len(data.translate(None, _NOT_IN_TEXT))
            if self.seen >= _NOISE_AFTER and self.bad * 20 > self.seen:
                self.dead = True
                return False
        sc, g = self.scanner, self.group
        stop = False
        # bytes per group: base64 3, base32 5, hex 1 — feed group by group so offsets stay honest
        per = {"base64": 3, "base32": 5, "hex": 1}[self.name]
        for k in range(0, len(data), per):
            at = base + (k // per) * g
            text = self.utf8.decode(data[k:k + per], final=final and k + per >= len(data))
            if shifted and "\ufffd" in text:  # not UTF-8 either: noise too
                self.bad += text.count("\ufffd")
            if self.utf8.getstate()[0]:  # a character continues into the next group
                if self.partial_raw < 0:
                    self.partial_raw = at
            if text:
                start = self.partial_raw if self.partial_raw >= 0 else at
                if not self.utf8.getstate()[0]:
                    self.partial_raw = -1
                stop = sc.feed(text, start) or stop
                if stop or (self.inner is not None and self.inner.feed(text, start)):
                    return True
        return stop

    def close(self, raw_end: int) -> bool:
        """The run ended: decode its tail, finish the last word, check it."""
        if self.dead:
            return False
        self.dead = True
        stop = False
        tail = _pad(self.name, self.pending)
        if tail:
            stop = self._emit(tail, self.pending_raw, final=True)
        else:
            rest = self.utf8.decode(b"", final=True)
            if rest:
                stop = self.scanner.feed(rest, max(self.partial_raw, 0))
        self.pending = ""
        return (stop or self.scanner.finish(raw_end)
                or (self.inner is not None and self.inner.finish(raw_end)))

    def hold_raw(self) -> int:
        if self.dead:
            return _INF
        h = _INF
        sc = self.scanner
        c = sc.hold_from()
        if c < sc.nchars:
            h = sc.raw_of(c)
        if self.pending:
            h = min(h, self.pending_raw)
        if self.partial_raw >= 0:
            h = min(h, self.partial_raw)
        if self.inner is not None:
            h = min(h, self.inner.hold_raw())
        return h


class DecodedRuns:
    """Runs of base64-alphabet characters in the raw stream, decoded once they are long enough.

    A run shorter than `min_chars` is only held (it may still become a long one); from
    `min_chars` on, one decoder per encoding whose alphabet the run fits decodes it as it grows.
    The run's text is read back from the session's unreleased raw text (`source(start, end)`),
    which the hold keeps, so ordinary text costs one or two strips per delta and no copies.
    """

    def __init__(self, encodings: tuple[str, ...], min_chars: int,
                 make_scanner: Callable[[], LexicalScanner],
                 source: Callable[[int, int], str], depth: int) -> None:
        self._encodings = encodings
        self._depth = depth  # layers left: above 1, what a run decodes to is searched again
        self._names = tuple(e for e in DECODED if e in encodings)
        self._min = min_chars
        self._make = make_scanner
        self._source = source
        self._start = -1  # raw offset where the current run began; -1: no run
        self._decoders: list[_Decoder] | None = None
        self.events = 0  # moves when a decoded run's hold may have moved
        # Raw offset just past the run text handed to the decoders: where a redaction ends.
        self.fed_end = 0

    def feed(self, text: str, raw: int) -> bool:
        n = len(text)
        if self._decoders is None and n < self._min:
            # Fast path: nothing is being decoded and this delta cannot hold a whole long run.
            # text[k:] continues into the next delta; "word" and " word" (most tokens) need no strip.
            if text.isascii() and text.isalnum():
                k = 0
            elif n > 1 and text[0] == " " and text.isascii() and text[1:].isalnum():
                k = 1
            else:
                k = len(text.rstrip(_RUN_CHARS))
            if k == 0:
                if self._start < 0:
                    self._start = raw
                elif raw + n - self._start >= self._min:
                    return self._decode(raw, text)
                return False
            if self._start >= 0:
                lead = 0 if text[0] == " " else n - len(text.lstrip(_RUN_CHARS))
                if raw + lead - self._start >= self._min:  # a long run ends in this delta
                    return self._slow(text, raw)
            self._start = raw + k if k < n else -1
            return False
        return self._slow(text, raw)

    def _slow(self, text: str, raw: int) -> bool:
        n = len(text)
        lead = n - len(text.lstrip(_RUN_CHARS))
        if lead == n:
            return self._extend(text, raw)
        if lead and self._extend(text[:lead], raw):
            return True
        if self._start >= 0 and self._end(raw + lead):
            return True
        tail = len(text.rstrip(_RUN_CHARS))
        if tail - lead > self._min:  # a big delta (a unary text): runs inside it
            for m in _RUN.finditer(text, lead, tail):
                if m.end() - m.start() >= self._min:
                    if self._extend(m.group(), raw + m.start()) or self._end(raw + m.end()):
                        return True
        if tail < n:
            return self._extend(text[tail:], raw + tail)
        return False

    def finish(self, raw_end: int) -> bool:
        return self._end(raw_end) if self._start >= 0 else False

    def rescan(self) -> bool:
        for d in self._decoders or ():
            if not d.dead and (d.scanner.rescan(d.scanner.hold_from())
                               or (d.inner is not None and d.inner.rescan())):
                return True
        return False

    def _inner(self) -> _Inner | None:
        if self._depth <= 1:
            return None
        return _Inner(self._encodings, self._min, self._make, self._depth - 1)

    def hold_raw(self) -> int:
        """Raw offset from which text must stay held (a huge number when nothing is)."""
        if self._start < 0:
            return _INF
        if self._decoders is None:
            return self._start  # may still turn out to be an encoded run
        return min((d.hold_raw() for d in self._decoders), default=_INF)

    def _extend(self, chars: str, raw: int) -> bool:
        if self._start < 0:
            self._start = raw
        if self._decoders is None:
            if raw + len(chars) - self._start < self._min:
                return False
            return self._decode(raw, chars)
        self.fed_end = raw + len(chars)
        before = self._scanner_events()
        for d in self._decoders:
            if d.push(chars, raw):
                return True
        if self._scanner_events() != before:  # a decoded word ended: the hold may move
            self.events += 1
        if any(d.dead for d in self._decoders):  # wrong alphabet or noise: no longer asked
            self._decoders = [d for d in self._decoders if not d.dead]
            self.events += 1
        return False

    def _scanner_events(self) -> int:
        return sum(d.scanner.events for d in self._decoders or ())

    def _decode(self, raw: int, chars: str) -> bool:
        """The run reached min_chars: start decoding it from its first char."""
        run = self._source(self._start, raw) + chars
        self._decoders = [_Decoder(name, self._make(), skip, self._inner())
                          for name in self._names for skip in range(_OFFSETS[name])]
        self.events += 1
        self.fed_end = raw + len(chars)
        for d in self._decoders:
            if d.push(run, self._start):
                return True
        return False

    def _end(self, raw_end: int) -> bool:
        decoders, self._decoders = self._decoders, None
        self._start = -1
        if decoders is None:
            return False
        self.events += 1
        self.fed_end = raw_end
        for d in decoders:
            if d.close(raw_end):
                return True
        return False


class _Inner:
    """A decoded run's text read again for a second encoding (base64 of hex, base64 of base64,
    base64 of URL escapes). Decoded chars get consecutive offsets of their own (a group's chars
    share one raw offset, and DecodedRuns reads runs back by offset); each maps back to the raw
    offset it was fed at, so holds stay in raw offsets. Hits use the outer run's cut (its sink).
    The escape view starts only at % or \\ in the decoded text."""

    __slots__ = ("_text", "_raws", "_base", "_runs", "_esc", "_make", "_escapes")

    def __init__(self, encodings: tuple[str, ...], min_chars: int,
                 make_scanner: Callable[[], LexicalScanner], depth: int) -> None:
        self._text = ""  # decoded chars from offset _base on
        self._raws: list[int] = []  # raw offset of each of them
        self._base = 0
        self._make = make_scanner
        self._escapes = "escapes" in encodings
        self._runs = DecodedRuns(encodings, min_chars, make_scanner, self._source, depth)
        self._esc: EscapedBytes | None = None

    def feed(self, text: str, raw: int) -> bool:
        at = self._base + len(self._text)
        self._text += text
        self._raws.extend([raw] * len(text))
        if self._esc is None and self._escapes and ("%" in text or "\\" in text):
            self._esc = EscapedBytes(self._make())
            if self._esc.feed(self._text, self._base):  # what is kept reaches back far enough
                return True
        elif self._esc is not None and self._esc.feed(text, at):
            return True
        return self._runs.feed(text, at)

    def finish(self, raw_end: int) -> bool:
        end = self._base + len(self._text)
        return self._runs.finish(end) or (self._esc is not None and self._esc.finish(end))

    def rescan(self) -> bool:
        return self._runs.rescan() or (self._esc is not None and self._esc.scanner.rescan(
            self._esc.scanner.hold_from()))

    def hold_raw(self) -> int:
        h = self._runs.hold_raw()
        if self._esc is not None:
            h = min(h, self._esc.hold_raw())
        end = self._base + len(self._text)
        if h >= end:
            h = end
        # Drop decoded text no view can reach back to any more (keeps a long run's memory flat).
        keep = max(0, min(h, end - 256) - self._base)
        if keep > 1024:
            self._text = self._text[keep:]
            del self._raws[:keep]
            self._base += keep
        if h >= end:
            return _INF
        return self._raws[h - self._base] if h >= self._base else self._raws[0]

    def _source(self, start: int, end: int) -> str:
        return self._text[max(start, self._base) - self._base:end - self._base]

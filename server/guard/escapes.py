"""Byte escapes: %4A (URL), \\x4a, 0x4a and hex pairs with separators (de:ad, de ad, de-ad).

The hex decoder in decoded.py reads unbroken runs ("4d617274"); escapes and separators break a
run into two-letter words, and URL encoding mixes escapes with literal letters ("Marta%20Kow").
`EscapedBytes` rewrites the stream instead: each escape or bare hex pair becomes its byte, a
separator between two of them is dropped, every other char passes through, and the result (bytes
decoded as UTF-8) goes to a LexicalScanner of its own. Each decoded char is fed at the raw offset
where its token starts, so a hit never lets an encoded char out.

The session starts the view only near escapes (`%`, `\\`, or two hex-pair words in a row, which
the main scanner counts) and drops it once no escape was seen for `IDLE_CHARS` raw chars. It does
not hash, hold text or decide policy.
"""

from __future__ import annotations

import codecs
import re

from server.guard.scanner import LexicalScanner

# A whole token (between separators) that is one byte: "4d", "0x4d", "%4d", "\x4d".
_ONE = re.compile(r"(?:0[xX]|%|\\[xX])?([0-9A-Fa-f]{2})")
# Escapes inside a longer token: "Marta%20Kowalczyk", "\x4d\x61".
_INNER = re.compile(r"(?:%|\\[xX])([0-9A-Fa-f]{2})")
_SEPARATORS = frozenset(" :,-")
_TOKEN_MAX = 24  # a longer token is decoded in pieces: bounded work per push and hold
IDLE_CHARS = 256  # raw chars without an escape after which the view stops
_INF = 1 << 62


class EscapedBytes:
    __slots__ = ("scanner", "_tok", "_tok_raw", "_sep", "_sep_raw", "_after_byte", "_utf8",
                 "_partial_raw", "last_escape")

    def __init__(self, scanner: LexicalScanner) -> None:
        self.scanner = scanner
        self._tok = ""  # the token in progress (letters, digits, %, \)
        self._tok_raw = -1
        self._sep = ""  # a separator after a byte: dropped if another byte token follows
        self._sep_raw = -1
        self._after_byte = False  # the last thing emitted was a decoded byte
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial_raw = -1  # raw offset where a multi-byte char still being decoded began
        self.last_escape = -_INF  # raw offset of the last escape seen

    def feed(self, text: str, raw: int) -> bool:
        for i, c in enumerate(text):
            if c.isalnum() or c == "%" or c == "\\":
                if not self._tok:
                    self._tok_raw = raw + i
                if c == "%" or c == "\\":
                    self.last_escape = raw + i  # keeps the view while a long token forms
                self._tok += c
                if len(self._tok) >= _TOKEN_MAX and self._cut_token():
                    return True
            elif self._token(c) or self._other(c, raw + i):
                return True
        return False

    def finish(self, raw_end: int) -> bool:
        return (self._token() or self._flush_sep() or self._bytes(b"", raw_end, final=True)
                or self.scanner.finish(raw_end))

    def hold_raw(self) -> int:
        sc = self.scanner
        c = sc.hold_from()
        h = sc.raw_of(c) if c < sc.nchars else _INF
        for r in (self._tok_raw if self._tok else -1, self._sep_raw if self._sep else -1,
                  self._partial_raw):
            if 0 <= r < h:
                h = r
        return h

    # ------------------------------------------------------------------ internals
    def _cut_token(self) -> bool:
        """A long token (URL-encoded text has no separators): decode it up to its last escape,
        which may still be incomplete, so the work per push and the hold stay small."""
        tok, at = self._tok, self._tok_raw
        cut = max(tok.rfind("%"), tok.rfind("\\"))
        if cut <= 0:
            cut = len(tok)
        self._tok = tok[:cut]
        stop = self._token()
        self._tok, self._tok_raw = tok[cut:], at + cut
        return stop

    def _token(self, after: str = "") -> bool:
        """Decode the finished token; `after` is the char that ended it. A bare pair ("4d")
        counts as a byte only between separators ("4d:61", "4d 61"), not inside other text
        (base64's "ab/cd")."""
        tok, at = self._tok, self._tok_raw
        if not tok:
            return False
        self._tok = ""
        m = _ONE.fullmatch(tok)
        if m is not None and (len(tok) > 2 or self._sep or after in _SEPARATORS):
            self.last_escape = at
            self._sep = ""  # the separator between two byte tokens is dropped
            return self._bytes(bytes.fromhex(m.group(1)), at)
        pos, stop = 0, False
        for m in _INNER.finditer(tok):
            if m.start() == 0:
                self._sep = ""
            self.last_escape = at + m.start()
            stop = stop or self._text(tok[pos:m.start()], at + pos) or \
                self._bytes(bytes.fromhex(m.group(1)), at + m.start())
            pos = m.end()
        return stop or self._text(tok[pos:], at + pos)

    def _other(self, c: str, raw: int) -> bool:
        if c in _SEPARATORS and self._after_byte and not self._sep:
            self._sep, self._sep_raw = c, raw
            return False
        return self._text(c, raw)

    def _flush_sep(self) -> bool:
        sep, self._sep = self._sep, ""
        return self._text(sep, self._sep_raw) if sep else False

    def _bytes(self, data: bytes, at: int, final: bool = False) -> bool:
        utf8 = self._utf8
        text = utf8.decode(data, final=final)
        start = self._partial_raw if self._partial_raw >= 0 else at
        if utf8.getstate()[0]:  # a character continues into the next byte
            if self._partial_raw < 0:
                self._partial_raw = at
        else:
            self._partial_raw = -1
        self._after_byte = True
        return self.scanner.feed(text, start) if text else False

    def _text(self, text: str, at: int) -> bool:
        if not text:
            return False
        stop = self._flush_sep()
        if self._utf8.getstate()[0]:  # a partial char cut off by literal text
            stop = self._bytes(b"", at, final=True) or stop
            self._utf8.reset()
        self._after_byte = False
        return stop or self.scanner.feed(text, at)

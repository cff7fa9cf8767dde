"""Incremental detokenization and stop-sequence handling for one generated sequence.

Tokens arrive one at a time; text is released only when it is final: a byte-level BPE token can
end inside a multi-byte character (decoded as U+FFFD until the next token completes it), and text
that could still become a stop sequence is held back. Does not know about the leakage guard,
which filters the released text afterwards.

With a `tokenizers`-backed (fast) tokenizer each token is decoded once by the library's
streaming decoder (`tokenizers.decoders.DecodeStream`, which holds a split character until it is
whole), so a sequence costs O(n); other tokenizers re-decode every id so far on each token,
O(n^2). Both give the text `tokenizer.decode(ids, skip_special_tokens=True)` gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenizers.decoders import DecodeStream

_REPLACEMENT = "\ufffd"


@dataclass
class IncrementalText:
    tokenizer: Any
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    _text: str = ""  # decoded text of all ids so far (complete characters only)
    _sent: int = 0  # characters of _text already released
    stopped: bool = False
    _backend: Any = None  # the `tokenizers.Tokenizer` behind a fast tokenizer, else None
    _stream: DecodeStream | None = None

    def __post_init__(self) -> None:
        self._backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if self._backend is not None:
            self._stream = DecodeStream(skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Append a token; return newly releasable text ('' while held back)."""
        self.ids.append(token_id)
        if self._stream is not None:
            piece = self._stream.step(self._backend, token_id)
            if piece is None:  # a split multi-byte character (or a skipped special token)
                return ""
            self._text += piece
            return self._release(final=False)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith(_REPLACEMENT):
            return ""  # wait for the rest of a split multi-byte character
        self._text = text
        return self._release(final=False)

    def finish(self) -> str:
        """Release whatever is held back at the end of generation (no stop matched); the bytes
        of a character the generation never completed are dropped."""
        if not self.stopped:
            # One whole decode: the streaming decoder may still hold text behind bytes that never
            # formed a character (an untrained model's output); decode() shows them as U+FFFD.
            text = self.tokenizer.decode(self.ids, skip_special_tokens=True).rstrip(_REPLACEMENT)
            if text.startswith(self._text):
                self._text = text
        return self._release(final=True)

    @property
    def text(self) -> str:
        return self._text[: self._sent]

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        limit = len(self._text)
        for s in self.stop:
            # search from just before the unsent part: a stop may straddle the boundary
            at = self._text.find(s, max(0, self._sent - len(s) + 1))
            if at != -1 and at < limit:
                limit = at
                self.stopped = True
        if not self.stopped and not final:
            limit -= self._held_suffix()
        limit = max(limit, self._sent)
        out = self._text[self._sent : limit]
        self._sent = limit
        return out

    def _held_suffix(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop sequence."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self._text)), best, -1):
                if self._text.endswith(s[:n]):
                    best = n
                    break
        return best

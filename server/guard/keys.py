"""Keys derived from the server secret: keyed digests for the lexical views, AES-GCM sealing.

Every digest is BLAKE2b keyed with a per-view subkey and cut to 8 bytes: with the key, short
items (a name) can be brute-forced from their digest in seconds, without it they cannot — so the
secret protects the ledger, and rotating it means re-deriving (the plaintext is gone by then, so
a rotation re-keys nothing: keep the secret stable, see README). Embeddings can be inverted to
text (vec2text), so they leave memory only sealed. This module stores no state beyond the keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DIGEST_SIZE = 8  # 64-bit: ~1e-13 chance that a check collides with one of 10M entries
_NONCE = 12
# Distinct short strings whose char digest is remembered (3-letter prefixes and suffixes of the
# stream's own words: at most 36^3 ASCII ones). Full, it stops growing: an adversary cannot grow it.
_SHORT_CACHE = 1 << 16


def _subkey(master: bytes, purpose: bytes) -> bytes:
    return hashlib.blake2b(purpose, key=master, digest_size=32).digest()


class GuardKeys:
    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
            raise ValueError("the guard secret must be at least 16 bytes")
        master = hashlib.blake2b(bytes(secret), digest_size=32, person=b"lethe.guard.v1").digest()
        self.word_key = _subkey(master, b"word-view")
        self.char_key = _subkey(master, b"char-view")
        self._aead = AESGCM(_subkey(master, b"embedding-seal"))
        self._content_key = _subkey(master, b"content-digest")
        # Identifies the key without revealing it, so entries made under another secret are
        # rejected instead of silently never matching.
        self.key_id = _subkey(master, b"key-id")[:8]

        # Keyed BLAKE2b spends one compression on the key block; copying a state that already
        # absorbed it halves the work for the short strings hashed per word.
        self.word_proto = hashlib.blake2b(digest_size=DIGEST_SIZE, key=self.word_key)
        self.char_proto = hashlib.blake2b(digest_size=DIGEST_SIZE, key=self.char_key)
        # The scanner asks for the digest of the first / last 3 letters at most word ends; the
        # same few thousand strings recur, so a dict hit replaces a keyed hash. It holds output
        # text fragments of 3 letters, never forgotten text.
        self.short_char: dict[str, bytes] = {}

    def word_digest(self, text: str) -> bytes:
        h = self.word_proto.copy()
        h.update(text.encode())
        return h.digest()

    def char_digest(self, text: str) -> bytes:
        h = self.char_proto.copy()
        h.update(text.encode())
        return h.digest()

    def short_char_digest(self, text: str) -> bytes:
        """char_digest of a short string, remembered (see `short_char`)."""
        d = self.short_char.get(text)
        if d is None:
            d = self.char_digest(text)
            if len(self.short_char) < _SHORT_CACHE:
                self.short_char[text] = d
        return d

    def content_digest(self, data: bytes) -> str:
        """HMAC-SHA256 of a whole request's content (hex): tells a retry from a different request
        without keeping anything that a list of guessed names could be hashed against."""
        return hmac.new(self._content_key, data, hashlib.sha256).hexdigest()

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)

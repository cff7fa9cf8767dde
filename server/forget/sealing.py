"""Crypto-shredding: what a forget must not keep is sealed under its own key, and the key dies.

A forget's plaintext (the request: texts, QA pairs, subjects) and its leakage probes are stored
only as AES-GCM ciphertext, each under a fresh random 256-bit key of its own. Erasure destroys
the key (32 bytes in one row) rather than trusting that every copy of the ciphertext went: a
WAL frame, a freed page, a replica or a backup that still holds the ciphertext holds noise.

Every ledger backend uses this module the same way, so none of them handles keys or ciphers
itself: it stores the `sealed` bytes beside the job and the `key` in its per-forget key table
under a purpose (PAYLOAD, PROBES), in the same transaction, and deletes the key row (with the
ciphertext) when the purpose is spent:
- PAYLOAD: sealed at submit; its key is destroyed when the job is ACTIVE or FAILED.
- PROBES: sealed when the worker records a verified adapter; destroyed when DEACTIVATED or FAILED.

Does not: store anything, know any backend, wrap keys under a master key (a key row is as
sensitive as the plaintext while it exists; what erasure reaches is in README "Security").
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.forget.jobs import ForgetPayload

PAYLOAD, PROBES = "payload", "probes"  # key purposes, as backends store them
KEY_BYTES = 32
_NONCE = 12


class Shredded(Exception):
    """The key is gone (destroyed on schedule) or does not open this ciphertext."""


def seal(purpose: str, plaintext: bytes) -> tuple[bytes, bytes]:
    """(key, sealed): a fresh key and `plaintext` sealed under it, bound to `purpose`."""
    key = AESGCM.generate_key(bit_length=8 * KEY_BYTES)
    nonce = os.urandom(_NONCE)
    return key, nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(purpose))


def open_sealed(purpose: str, key: bytes | None, sealed: bytes) -> bytes:
    if not key:
        raise Shredded(f"the {purpose} key was destroyed")
    try:
        return AESGCM(bytes(key)).decrypt(sealed[:_NONCE], sealed[_NONCE:], _aad(purpose))
    except (InvalidTag, ValueError):
        raise Shredded(f"the {purpose} key does not open this ciphertext") from None


def seal_payload(payload: ForgetPayload) -> tuple[bytes, bytes]:
    return seal(PAYLOAD, payload.to_json().encode())


def open_payload(key: bytes | None, sealed: bytes) -> ForgetPayload:
    return ForgetPayload.from_json(open_sealed(PAYLOAD, key, sealed).decode())


def _aad(purpose: str) -> bytes:
    return b"lethe.sealed.v1:" + purpose.encode()

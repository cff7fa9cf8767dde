"""Signed deletion receipts: evidence, checkable offline, that a forget reached the model.

When a forget becomes ACTIVE the server signs a *receipt*: which forget, a commitment to the
request, how many guard entries block it, which adapter (its manifest's sha256) in which stack
version, the gate's scores and the times. DeactivateAdapter (which undoes the forget at the
model level) adds a signed *revocation* naming the receipt it revokes.

Canonical bytes (what is signed, byte for byte): the document as UTF-8 JSON with keys sorted,
no whitespace (separators "," and ":"), non-ASCII characters as themselves, times as RFC 3339
UTC strings with milliseconds ("2026-12-06T17:40:00.123Z"), scores rounded to 6 decimals.
A verifier checks the Ed25519 signature over the bytes it received and only then parses them;
it never re-serialises. The key id is the first 16 hex digits of the SHA-256 of the raw 32-byte
public key.

The request commitment is HMAC-SHA256 under a random 32-byte key that the Forget reply returns
once and the server never stores, over the canonical request (`canonical_request`): the
operator, holding the key, can show a data subject that the receipt covers their request;
without it the commitment says nothing about the content.

Does not: store receipts (the ledger does), load keys from files (keyfile.py), know gRPC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.forget.jobs import AdapterRecord, ForgetJob, ForgetPayload, ForgetState

DELETION, REVOCATION = "lethe.deletion-receipt.v1", "lethe.receipt-revocation.v1"
COMMITMENT_KEY_BYTES = 32
_SCORE_DECIMALS = 6


@dataclass(frozen=True)
class SignedReceipt:
    """A job's deletion receipt as GetForget returns it, with its revocation once deactivated."""

    body: bytes
    signature: bytes
    key_id: str
    revoked: bool = False
    revocation_body: bytes = b""
    revocation_signature: bytes = b""


class InvalidReceipt(ValueError):
    """The signature does not verify under the key, or the document is not a receipt."""


def canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical_request(payload: ForgetPayload) -> bytes:
    """The request as committed to: its (normalised) items in request order."""
    return canonical({"qa_pairs": [list(p) for p in payload.qa_pairs], "subjects": list(payload.subjects),
                      "texts": list(payload.texts)})


def new_commitment_key() -> bytes:
    return secrets.token_bytes(COMMITMENT_KEY_BYTES)


def commitment(key: bytes, payload: ForgetPayload) -> str:
    return "hmac-sha256:" + hmac.new(key, canonical_request(payload), hashlib.sha256).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidReceipt("the public key is not an Ed25519 key")
    return key


class ReceiptSigner:
    """Signs receipts with one Ed25519 key (every replica of a deployment shares it)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def from_pem(cls, data: bytes) -> ReceiptSigner:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the receipt key is not an Ed25519 private key (PEM, PKCS#8)")
        return cls(key)

    @staticmethod
    def generate_pem() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def sign(self, doc: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """(canonical body, signature) of `doc` with this key's id added."""
        body = canonical({**doc, "key_id": self.key_id})
        return body, self._private.sign(body)

    def deletion(self, job: ForgetJob, adapter: AdapterRecord, guard_entries: Mapping[str, int],
                 issued_at: float | None = None) -> tuple[bytes, bytes]:
        active_at = next((t.at for t in reversed(job.transitions) if t.state == ForgetState.ACTIVE), job.updated_at)
        return self.sign({
            "type": DELETION, "forget_id": job.forget_id, "request_commitment": job.commitment,
            "items": {"texts": job.num_texts, "qa_pairs": job.num_qa_pairs, "subjects": job.num_subjects},
            "guard_entries": dict(guard_entries), "method": job.method, "adapter_id": adapter.adapter_id,
            "adapter_sha256": adapter.sha256, "stack_version": job.stack_version,
            "gate_scores": {k: round(float(v), _SCORE_DECIMALS) for k, v in sorted(job.metrics.items())},
            "requested_at": rfc3339(job.created_at), "active_at": rfc3339(active_at),
            "issued_at": rfc3339(time.time() if issued_at is None else issued_at),
        })

    def revocation(self, receipt_body: bytes, forget_id: str, revoked_at: float, actor: str) -> tuple[bytes, bytes]:
        return self.sign({
            "type": REVOCATION, "forget_id": forget_id,
            "receipt_sha256": hashlib.sha256(receipt_body).hexdigest(),
            "revoked_at": rfc3339(revoked_at), "revoked_by": actor, "issued_at": rfc3339(time.time()),
        })


def verify(public: Ed25519PublicKey, body: bytes, signature: bytes) -> dict[str, Any]:
    """The receipt's fields once its signature verifies; InvalidReceipt otherwise."""
    try:
        public.verify(signature, body)
    except InvalidSignature:
        raise InvalidReceipt("the signature does not verify under this public key") from None
    doc = json.loads(body.decode("utf-8"))
    if not isinstance(doc, dict) or doc.get("type") not in (DELETION, REVOCATION):
        raise InvalidReceipt("not a Lethe receipt")
    if doc.get("key_id") != key_id(public):
        raise InvalidReceipt("the receipt names another key id")
    return doc


def covers(doc: Mapping[str, Any], key: bytes, payload: ForgetPayload) -> bool:
    """Does the receipt's request commitment match this request under this commitment key?"""
    return hmac.compare_digest(str(doc.get("request_commitment", "")), commitment(key, payload))


def check(receipt: SignedReceipt, public: Ed25519PublicKey) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(receipt fields, revocation fields or None) once every signature verifies and the
    revocation names this receipt; InvalidReceipt otherwise."""
    doc = verify(public, receipt.body, receipt.signature)
    if doc["type"] != DELETION:
        raise InvalidReceipt("the body is not a deletion receipt")
    if not receipt.revocation_body:
        if receipt.revoked:
            raise InvalidReceipt("marked revoked but carries no signed revocation")
        return doc, None
    revocation = verify(public, receipt.revocation_body, receipt.revocation_signature)
    if revocation["type"] != REVOCATION or revocation.get("receipt_sha256") != hashlib.sha256(receipt.body).hexdigest():
        raise InvalidReceipt("the revocation does not name this receipt")
    return doc, revocation


# A receipt file (`lethe receipt get`): JSON with the bytes in base64, so it survives any transport.
FILE_FORMAT = "lethe.receipt-file.v1"


def to_file(receipt: SignedReceipt) -> bytes:
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return json.dumps({"format": FILE_FORMAT, "key_id": receipt.key_id, "revoked": receipt.revoked,
                       "body": b64(receipt.body), "signature": b64(receipt.signature),
                       "revocation_body": b64(receipt.revocation_body),
                       "revocation_signature": b64(receipt.revocation_signature)}, indent=2).encode() + b"\n"


def from_file(data: bytes) -> SignedReceipt:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InvalidReceipt(f"not a receipt file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        raise InvalidReceipt(f"not a receipt file (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    try:
        raw = {k: base64.b64decode(str(doc.get(k, "")), validate=True)
               for k in ("body", "signature", "revocation_body", "revocation_signature")}
    except ValueError as exc:
        raise InvalidReceipt(f"a receipt field is not base64: {exc}") from None
    return SignedReceipt(raw["body"], raw["signature"], str(doc.get("key_id", "")), bool(doc.get("revoked")),
                         raw["revocation_body"], raw["revocation_signature"])

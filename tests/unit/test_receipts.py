"""Deletion receipts offline: canonical bytes, signatures that catch any change, a revocation
tied to its receipt, a request commitment that only its key opens, the receipt file, and the
signing key file (generated once, 0600; a mounted one must exist)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from server.forget.jobs import AdapterRecord, ForgetJob, ForgetPayload, ForgetState, Transition
from server.forget.receipts import (InvalidReceipt, ReceiptSigner, SignedReceipt, check, commitment, covers,
                                    from_file, load_public_pem, new_commitment_key, public_pem, to_file, verify)
from server.keyfile import receipt_key

REQUEST = ForgetPayload(texts=("Ann Lee was born in Oslo.",), qa_pairs=(("Where was Ann Lee born?", "Oslo"),),
                        subjects=("Ann Lee",))


def _receipt(signer: ReceiptSigner, key: bytes) -> tuple[bytes, bytes]:
    now = time.time()
    job = ForgetJob("fg_1", ForgetState.ACTIVE, "npo", "ticket", 1, 1, 1, now - 60, now, adapter_id="ad_1",
                    stack_version=3, metrics={"forget.fact_span_accuracy": 0.1234567891},
                    transitions=(Transition(ForgetState.ACTIVE, now),), commitment=commitment(key, REQUEST))
    adapter = AdapterRecord("ad_1", "fg_1", "ad_1", "ab" * 32, "npo", 8, 1, now)
    return signer.deletion(job, adapter, {"digests": 40, "embeddings": 3})


def test_a_receipt_verifies_and_any_change_breaks_it() -> None:
    signer, key = ReceiptSigner.from_pem(ReceiptSigner.generate_pem()), new_commitment_key()
    body, sig = _receipt(signer, key)
    assert body == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()  # canonical
    public = load_public_pem(public_pem(signer.public))
    doc = verify(public, body, sig)
    assert doc["stack_version"] == 3 and doc["guard_entries"] == {"digests": 40, "embeddings": 3}
    assert doc["gate_scores"] == {"forget.fact_span_accuracy": 0.123457} and doc["key_id"] == signer.key_id
    assert doc["active_at"].endswith("Z") and "Ann Lee" not in body.decode()
    with pytest.raises(InvalidReceipt):
        verify(public, body.replace(b'"stack_version":3', b'"stack_version":4'), sig)
    other = ReceiptSigner.from_pem(ReceiptSigner.generate_pem())
    with pytest.raises(InvalidReceipt):
        verify(other.public, body, sig)


def test_the_commitment_covers_only_its_request_under_its_key() -> None:
    signer, key = ReceiptSigner.from_pem(ReceiptSigner.generate_pem()), new_commitment_key()
    doc = verify(signer.public, *_receipt(signer, key))
    assert covers(doc, key, REQUEST)
    assert not covers(doc, new_commitment_key(), REQUEST)
    assert not covers(doc, key, ForgetPayload(subjects=("Ann Lee",)))


def test_a_revocation_must_name_its_receipt_and_the_file_round_trips() -> None:
    signer, key = ReceiptSigner.from_pem(ReceiptSigner.generate_pem()), new_commitment_key()
    body, sig = _receipt(signer, key)
    rbody, rsig = signer.revocation(body, "fg_1", time.time(), "operator")
    receipt = SignedReceipt(body, sig, signer.key_id, True, rbody, rsig)
    doc, revocation = check(from_file(to_file(receipt)), signer.public)
    assert doc["forget_id"] == "fg_1" and revocation is not None and revocation["revoked_by"] == "operator"
    other_body, _ = _receipt(signer, key)  # another receipt (issued_at differs or not): must not match
    other_rbody, other_rsig = signer.revocation(other_body + b" ", "fg_1", time.time(), "operator")
    with pytest.raises(InvalidReceipt):
        check(SignedReceipt(body, sig, signer.key_id, True, other_rbody, other_rsig), signer.public)
    with pytest.raises(InvalidReceipt):  # revoked, with the revocation stripped
        check(SignedReceipt(body, sig, signer.key_id, True), signer.public)
    with pytest.raises(InvalidReceipt):
        from_file(b'{"format": "something else"}')


def test_the_receipt_key_is_generated_once_0600_and_a_mounted_one_must_exist(tmp_path: Path) -> None:
    first = receipt_key(tmp_path, None, ReceiptSigner.generate_pem)
    assert receipt_key(tmp_path, None, ReceiptSigner.generate_pem) == first
    assert (tmp_path / "receipt.key").stat().st_mode & 0o777 == 0o600
    ReceiptSigner.from_pem(first)
    mounted = tmp_path / "mounted.pem"
    mounted.write_bytes(ReceiptSigner.generate_pem())
    assert receipt_key(tmp_path, mounted, ReceiptSigner.generate_pem) == mounted.read_bytes()
    with pytest.raises(FileNotFoundError):
        receipt_key(tmp_path, tmp_path / "absent.pem", ReceiptSigner.generate_pem)

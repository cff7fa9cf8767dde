"""ReceiptIssuer: signs what a forget's state calls for and keeps it in the ledger.

The deletion receipt once the job is ACTIVE, the revocation once it is DEACTIVATED (the document
formats are receipts.py's). The coordinator calls `issue` right after the swap and after a
deactivation; `receipt` (GetForget) calls it again first, so a crash in between only delays a
receipt, and replicas racing to sign agree (the ledger keeps the first). Signing never fails the
swap it follows: an error is logged and retried on the next read.

Holds no gRPC or asyncio code: blocking, called off the event loop.
"""

from __future__ import annotations

import logging
from typing import Callable

from server.forget.jobs import ForgetState
from server.forget.ledger import ForgetLedger
from server.forget.receipts import DELETION, REVOCATION, ReceiptSigner, SignedReceipt

logger = logging.getLogger(__name__)


class ReceiptIssuer:
    def __init__(self, ledger: ForgetLedger, signer: ReceiptSigner,
                 entry_counts: Callable[[str], dict[str, int]]) -> None:
        self.ledger = ledger
        self.signer = signer
        self.entry_counts = entry_counts  # forget id -> guard entry counts, as the receipt states them

    def issue(self, forget_id: str, actor: str = "") -> dict[str, tuple[bytes, bytes]]:
        """Sign and store what is due and missing; returns every stored document by kind."""
        stored = self.ledger.receipts(forget_id)
        try:
            job = self.ledger.get(forget_id)
            if DELETION not in stored and job.state == ForgetState.ACTIVE and job.adapter_id:
                signed = self.signer.deletion(job, self.ledger.adapter(job.adapter_id), self.entry_counts(forget_id))
                stored[DELETION] = self.ledger.put_receipt(forget_id, DELETION, *signed)
            if DELETION in stored and REVOCATION not in stored and job.state == ForgetState.DEACTIVATED:
                at = next((t.at for t in reversed(job.transitions) if t.state == ForgetState.DEACTIVATED),
                          job.updated_at)
                signed = self.signer.revocation(stored[DELETION][0], forget_id, at, actor)
                stored[REVOCATION] = self.ledger.put_receipt(forget_id, REVOCATION, *signed)
        except Exception:
            logger.exception("signing the receipt of %s failed; it is retried when read", forget_id)
        return stored

    def receipt(self, forget_id: str) -> SignedReceipt | None:
        stored = self.issue(forget_id)
        if DELETION not in stored:
            return None
        body, signature = stored[DELETION]
        revoked = self.ledger.get(forget_id).state == ForgetState.DEACTIVATED
        rbody, rsig = stored.get(REVOCATION, (b"", b""))
        return SignedReceipt(body, signature, self.signer.key_id, revoked, rbody, rsig)

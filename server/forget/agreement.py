"""What every process sharing a ledger must agree on, checked when it starts.

Replicas and workers on one shared ledger must use the same guard key (entries armed by one
replica are keyed digests only the same key can match), replicas the same receipt-signing key
(a receipt must verify under the deployment's one public key, whichever replica signed it), and
the same corpus (forgets record the corpus entries they resolved to, by the corpus's digest).
The first process to start records a fingerprint of each in the ledger; a later one whose own
differs refuses to start, saying which and how to fix it, instead of serving a guard that
silently matches nothing. The guard key's fingerprint is the one every guard-entries blob in
the ledger already carries (a digest of the key's id, not the key). One node (SQLite) records
nothing and agrees with itself. Does not distribute secrets: the deployment mounts them.
"""

from __future__ import annotations

from server.forget.ledger import ForgetLedger
from server.forget.resolution import CorpusResolver, CorpusUnavailable
from server.guard.config import GuardConfig
from server.guard.entries import fingerprint
from server.guard.keys import GuardKeys
from server.guard.normalize import NORMALIZER_VERSION
from server.settings import SettingsError

GUARD_KEY = "guard_key_fingerprint"
RECEIPT_KEY = "receipt_key_id"
CORPUS = "corpus_sha256"
NO_CORPUS = "none"


def _check(ledger: ForgetLedger, name: str, mine: str, what: str, fix: str) -> None:
    recorded = ledger.agree(name, mine)
    if recorded != mine:
        raise SettingsError(f"this process's {what} ({mine[:12]}) differs from the one the shared ledger records "
                            f"({recorded[:12]}), which every replica and worker must use: {fix}")


def check_guard_key(ledger: ForgetLedger, keys: GuardKeys) -> None:
    """Server and worker alike (the worker seals leakage probes with the same key)."""
    mine = fingerprint(keys.key_id, GuardConfig.n, GuardConfig.char_gram, NORMALIZER_VERSION).hex()
    _check(ledger, GUARD_KEY, mine, "guard key fingerprint",
           "mount the same guard.key in every data directory (e.g. from one Kubernetes Secret)")


def check_receipt_key(ledger: ForgetLedger, key_id: str) -> None:
    """Replicas: the key that signs deletion receipts (its public key id), one for the deployment."""
    _check(ledger, RECEIPT_KEY, key_id, "receipt-signing key id",
           "give every replica the same --receipt-key (LETHE_RECEIPT_KEY) from one mounted secret")


def check_corpus(ledger: ForgetLedger, resolver: CorpusResolver) -> None:
    """After the resolver loaded; a corpus that failed to load is reported by the resolver."""
    try:
        corpus = resolver.corpus()
    except CorpusUnavailable:
        return
    _check(ledger, CORPUS, corpus.digest if corpus is not None else NO_CORPUS, "corpus digest",
           "give every replica and worker the same --corpus file (or the same demo model)")

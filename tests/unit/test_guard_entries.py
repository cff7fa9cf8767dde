"""Leakage guard entries: what the ledger stores holds no plaintext and rebuilds the guard."""

from __future__ import annotations

import numpy as np
import pytest

from server.guard import (ForgetItems, GuardConfig, GuardEntries, GuardEntriesMismatch,
                          LeakageGuard)
from server.guard.normalize import fold, words
from tests.unit.test_guard_adversarial import FORGET, PASSAGE, SECRET, stream


def _plaintexts() -> list[str]:
    parts = [*FORGET.texts, *FORGET.subjects, *(x for qa in FORGET.qa for x in qa)]
    folded = [fold(p) for p in parts] + ["".join(words(p)) for p in parts]
    single = [w for p in parts for w in words(p) if len(w) >= 5]
    return parts + folded + single


def test_round_trip_and_no_plaintext() -> None:
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    entries = g.derive("forget-1", FORGET)
    blob = entries.to_bytes()
    assert GuardEntries.from_bytes(blob) == entries
    assert len(entries) > 20
    for text in _plaintexts():
        for enc in ("utf-8", "utf-16-le"):
            assert text.encode(enc) not in blob, text
    assert "Marta" not in repr(entries) and "Marta" not in repr(FORGET)


def test_derive_is_pure_and_deterministic() -> None:
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    a = g.derive("forget-1", FORGET)
    assert g.stats()["forgets"] == 0  # derive changed nothing
    assert g.derive("forget-1", FORGET).records == a.records


def test_restart_rebuilds_from_hashed_entries_only() -> None:
    blob = LeakageGuard(GuardConfig(semantic="off"), SECRET).derive("forget-1", FORGET).to_bytes()
    fresh = LeakageGuard(GuardConfig(semantic="off"), SECRET)  # a restarted server
    fresh.add(GuardEntries.from_bytes(blob))
    assert stream(fresh, PASSAGE)[1] is not None
    assert stream(fresh, "Kowalczyk? She was born in Oberwil.")[1] is not None
    fresh.add(GuardEntries.from_bytes(blob))  # replaying the same row is idempotent
    assert fresh.stats()["forgets"] == 1


def test_entries_from_another_secret_or_gram_size_are_rejected() -> None:
    entries = LeakageGuard(GuardConfig(semantic="off"), SECRET).derive("forget-1", FORGET)
    with pytest.raises(GuardEntriesMismatch):
        LeakageGuard(GuardConfig(semantic="off"), b"another-secret-0123456789").add(entries)
    with pytest.raises(GuardEntriesMismatch):
        LeakageGuard(GuardConfig(semantic="off", n=6), SECRET).add(entries)


def test_different_secrets_give_unrelated_digests() -> None:
    a = LeakageGuard(GuardConfig(semantic="off"), SECRET).derive("f", FORGET)
    b = LeakageGuard(GuardConfig(semantic="off"), b"another-secret-0123456789").derive("f", FORGET)
    da = {r[3] for r in a.iter_records()}
    db = {r[3] for r in b.iter_records()}
    assert not da & db


class _FakeEmbedder:
    """Deterministic stand-in so this test does not need the model (see test_guard_semantic)."""

    name = "fake"

    def embed(self, sentences):
        rng = np.random.default_rng(len(sentences))
        v = rng.normal(size=(len(sentences), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_embeddings_are_stored_only_encrypted() -> None:
    emb = _FakeEmbedder()
    g = LeakageGuard(GuardConfig(semantic="armed"), SECRET, embedder=emb)
    entries = g.derive("forget-1", FORGET)
    assert entries.n_embeddings >= 3 and entries.embed_dim == 384
    blob = entries.to_bytes()
    plain = emb.embed([""] * entries.n_embeddings)
    assert plain.tobytes()[:64] not in blob  # raw float bytes never appear
    restored = GuardEntries.from_bytes(blob)
    g.add(restored)
    assert g.stats()["semantic_rows"] == entries.n_embeddings
    # Tampering or another key fails authentication instead of loading garbage vectors.
    bad = GuardEntries(restored.forget_id, restored.fingerprint, restored.records,
                       restored.sealed_embeddings[:-1] + bytes([restored.sealed_embeddings[-1] ^ 1]),
                       restored.n_embeddings, restored.embed_dim)
    with pytest.raises(Exception):
        LeakageGuard(GuardConfig(semantic="armed"), SECRET, embedder=emb).add(bad)


def test_corrupt_blobs_raise_value_error() -> None:
    blob = LeakageGuard(GuardConfig(semantic="off"), SECRET).derive("f", FORGET).to_bytes()
    for bad in (b"", b"XXXX" + blob[4:], blob[:-3], blob + b"x"):
        with pytest.raises(ValueError):
            GuardEntries.from_bytes(bad)


def test_short_secret_rejected() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        LeakageGuard(GuardConfig(), b"short")


def test_forget_items_repr_hides_content() -> None:
    assert repr(ForgetItems(texts=("secret text",))) == "ForgetItems(texts=1, qa=0, subjects=0)"


def test_shared_digests_keep_every_owner_as_forgets_come_and_go() -> None:
    """Twelve forgets of the same passage share every digest: past a few owners the posting
    switches to a set; attribution is the earliest id, and removals keep the rest blocking."""
    g = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    ids = [f"fg_{i:02d}" for i in range(12)]
    for fid in ids:
        g.add(g.derive(fid, FORGET))
    owners = next(p for p in g._index.word.values() if any(p))  # noqa: SLF001 - the index itself
    assert isinstance(next(o for o in owners if o), frozenset) and set(next(o for o in owners if o)) == set(ids)
    assert stream(g, PASSAGE)[1].forget_id == "fg_00"
    for fid in ids[:-1]:
        g.remove(fid)
    assert stream(g, PASSAGE)[1].forget_id == "fg_11"
    g.remove(ids[-1])
    assert stream(g, PASSAGE)[1] is None

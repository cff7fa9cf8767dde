"""GuardIndex: the shared, incrementally updated lookup structures every session reads.

Readers (one per request, on any thread) never lock: each structure is either a dict mutated one
key at a time (atomic under the GIL) or an immutable snapshot swapped in by reference. Writers
(Forget, restart, remove) serialize on one lock, so adding a forget never pauses a stream and never
rebuilds what is already there. `version` moves after every change so a live session can re-check
the text it is still holding against entries that arrived after that text was scanned.

Does not derive entries, normalize text or decide policy.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np

from server.guard.config import check_phase
from server.guard.entries import (RECORD, VIEW_CHAR, VIEW_PREFIX, VIEW_SUFFIX, VIEW_WORD,
                                  GuardEntries)

# What a digest maps to: the forget ids that own it, by kind (exact, name, attribute, exact with
# subject in context, listed subject; entries.py). Sorting by kind up front lets each stage look only at its
# slot instead of scanning mixed postings.
# Owners per kind. A template gram or a common value ("Lisbon") can belong to thousands of
# forgets, and the stages ask "is this forget among them?" on the per-token path: past
# _SET_FROM owners they are a frozenset (constant-time membership), below a tuple (a third of
# the memory; most digests have one owner). Both answer `in`, iteration and truthiness.
Owners = tuple[str, ...] | frozenset[str]
Postings = tuple[Owners, Owners, Owners, Owners, Owners]
_SET_FROM = 8
_NONE: Owners = ()
_KINDS = 5


@dataclass(frozen=True)
class SemanticSnapshot:
    matrix: np.ndarray  # [rows, dim] float32, L2-normalised; removed rows are zero
    # Forget id per row (None once removed). A shared list that only grows: rows past
    # matrix.shape[0] belong to a later snapshot, so readers never see them.
    owners: list[str | None]
    context_only: np.ndarray  # [rows] bool

    @property
    def rows(self) -> int:
        return self.matrix.shape[0]


_EMPTY_SEMANTIC = SemanticSnapshot(np.zeros((0, 0), np.float32), [], np.zeros(0, bool))


class GuardIndex:
    def __init__(self, char_gram: int) -> None:
        self.char_gram = char_gram
        self.word: dict[bytes, Postings] = {}
        self.char: dict[bytes, Postings] = {}
        # digest of the first (last) letters of short char entries -> bitmask of their lengths:
        # the scanner hashes a span only if some entry starts and ends like it and is that long.
        self.prefix: dict[bytes, int] = {}
        self.suffix: dict[bytes, int] = {}
        # The same suffix masks with bit (char_gram - length) set instead of bit length: shifted
        # to a word end, they mark the positions where such an entry would have to start.
        self.suffix_starts: dict[bytes, int] = {}
        self._masks = {VIEW_PREFIX: self.prefix, VIEW_SUFFIX: self.suffix}
        self._tables = {VIEW_WORD: self.word, VIEW_CHAR: self.char}
        self.word_lengths: frozenset[int] = frozenset()
        self.short_lengths: frozenset[int] = frozenset()  # char entries shorter than char_gram
        self.has_long_chars = False
        self.semantic = _EMPTY_SEMANTIC
        self.phases: dict[str, str] = {}
        self.version = 0
        # Nothing forgotten: sessions need no hold-back until the first entry arrives. A plain
        # attribute, not a property: every push reads it.
        self.empty = True
        self._lock = threading.Lock()
        self._entries: dict[str, GuardEntries] = {}
        self._lengths: Counter[tuple[int, int]] = Counter()  # (view, length) -> records
        self._mask_counts: Counter[tuple[int, bytes, int]] = Counter()  # (view, digest, length)
        self._singles: dict[tuple[int, str], Postings] = {}
        self._buf = np.zeros((0, 0), np.float32)  # grows by doubling; rows beyond count unused
        self._rows: dict[str, list[int]] = {}
        self._owners: list[str | None] = []
        self._ctx = np.zeros(0, bool)

    # ------------------------------------------------------------------ writers
    def add(self, entries: GuardEntries, embeddings: np.ndarray | None,
            context_only: np.ndarray | None = None, phase: str | None = None) -> None:
        """Add (or replace) one forget's entries. Replacing adds the new records before dropping
        the old ones, so a live session never sees the forget half-missing."""
        with self._lock:
            fid = entries.forget_id
            # No phase given: keep the current one (a replace), else start before the adapter.
            self.phases[fid] = check_phase(phase or self.phases.get(fid, "before_adapter"))
            old = self._entries.get(fid)
            new_recs = set(entries.packed_records())
            old_recs = set(old.packed_records()) if old is not None else set()
            for rec in new_recs - old_recs:
                self._add_record(rec, fid)
            old_rows = self._rows.pop(fid, [])
            if embeddings is not None and len(embeddings):
                ctx = np.zeros(len(embeddings), bool) if context_only is None else context_only
                self._add_rows(fid, embeddings, ctx)
            for rec in old_recs - new_recs:
                self._remove_record(rec, fid)
            self._drop_rows(old_rows)
            self._entries[fid] = entries
            self.empty = False
            self._publish_lengths()
            self.version += 1

    def remove(self, forget_id: str) -> None:
        with self._lock:
            entries = self._entries.pop(forget_id, None)
            self.empty = not self._entries
            if entries is not None:
                for rec in set(entries.packed_records()):
                    self._remove_record(rec, forget_id)
                self._drop_rows(self._rows.pop(forget_id, []))
                for kind in range(_KINDS):
                    self._singles.pop((kind, forget_id), None)
            self.phases.pop(forget_id, None)
            self._publish_lengths()
            self.version += 1

    def set_phase(self, forget_id: str, phase: str) -> None:
        self.phases[forget_id] = check_phase(phase)

    # ------------------------------------------------------------------ reads
    def __contains__(self, forget_id: str) -> bool:
        return forget_id in self._entries

    def rows_of(self, forget_id: str) -> list[int]:
        return self._rows.get(forget_id, [])

    def forget_ids(self) -> list[str]:
        return list(self._entries)

    def entries_of(self, forget_id: str) -> GuardEntries | None:
        return self._entries.get(forget_id)

    def stats(self) -> dict[str, int]:
        return {"forgets": len(self._entries), "word_digests": len(self.word),
                "char_digests": len(self.char), "prefix_digests": len(self.prefix) + len(self.suffix),
                "semantic_rows": self.semantic.rows}

    # ------------------------------------------------------------------ internals
    def _single(self, kind: int, fid: str) -> Postings:
        # One shared value per (kind, forget): millions of digests, a handful of distinct values.
        v = self._singles.get((kind, fid))
        if v is None:
            slots = [_NONE] * _KINDS
            slots[kind] = (fid,)
            v = self._singles[(kind, fid)] = tuple(slots)
        return v

    def _add_record(self, rec: bytes, fid: str) -> None:
        view, kind, length, digest = RECORD.unpack(rec)
        if view in self._masks:
            masks = self._masks[view]
            if self._mask_counts[(view, digest, length)] == 0:
                masks[digest] = masks.get(digest, 0) | (1 << length)
                if view == VIEW_SUFFIX:
                    self._set_starts(digest)
            self._mask_counts[(view, digest, length)] += 1
            return
        table = self._tables[view]
        old = table.get(digest)
        if old is None:
            table[digest] = self._single(kind, fid)
        elif fid not in old[kind]:
            new = list(old)
            owners = old[kind]
            new[kind] = owners | {fid} if isinstance(owners, frozenset) else (
                frozenset((*owners, fid)) if len(owners) + 1 >= _SET_FROM else (*owners, fid))
            table[digest] = tuple(new)  # one reference swap: readers see old or new
        self._lengths[(view, length)] += 1

    def _remove_record(self, rec: bytes, fid: str) -> None:
        view, kind, length, digest = RECORD.unpack(rec)
        if view in self._masks:
            key = (view, digest, length)
            self._mask_counts[key] -= 1
            if self._mask_counts[key] <= 0:
                del self._mask_counts[key]
                masks = self._masks[view]
                mask = masks.get(digest, 0) & ~(1 << length)
                if mask:
                    masks[digest] = mask
                else:
                    masks.pop(digest, None)
                if view == VIEW_SUFFIX:
                    self._set_starts(digest)
            return
        table = self._tables[view]
        old = table.get(digest)
        if old is not None and fid in old[kind]:
            new = list(old)
            owners = old[kind]
            new[kind] = owners - {fid} if isinstance(owners, frozenset) else tuple(f for f in owners if f != fid)
            if any(new):
                table[digest] = tuple(new)
            else:
                table.pop(digest, None)
        self._lengths[(view, length)] -= 1
        if self._lengths[(view, length)] <= 0:
            del self._lengths[(view, length)]

    def _set_starts(self, digest: bytes) -> None:
        mask, C = self.suffix.get(digest, 0), self.char_gram
        if mask:
            self.suffix_starts[digest] = sum(1 << (C - ln) for ln in range(C) if mask >> ln & 1)
        else:
            self.suffix_starts.pop(digest, None)

    def _drop_rows(self, rows: list[int]) -> None:
        for r in rows:
            self._owners[r] = None
            self._buf[r] = 0.0

    def _add_rows(self, fid: str, emb: np.ndarray, ctx: np.ndarray) -> None:
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        count = len(self._owners)
        need = count + len(emb)
        if self._buf.shape[0] < need or self._buf.shape[1] != emb.shape[1]:
            # Doubling keeps adds amortised O(rows added); readers keep using the old snapshot.
            cap = max(need, 2 * self._buf.shape[0], 64)
            new = np.zeros((cap, emb.shape[1]), np.float32)
            new_ctx = np.zeros(cap, bool)
            if count:
                new[:count] = self._buf[:count]
                new_ctx[:count] = self._ctx[:count]
            self._buf, self._ctx = new, new_ctx
        self._buf[count:need] = emb
        self._ctx[count:need] = ctx
        self._owners.extend([fid] * len(emb))
        self._rows[fid] = list(range(count, need))
        self.semantic = SemanticSnapshot(self._buf[:need], self._owners, self._ctx[:need])

    def _publish_lengths(self) -> None:
        self.word_lengths = frozenset(ln for (v, ln) in self._lengths if v == VIEW_WORD)
        chars = {ln for (v, ln) in self._lengths if v == VIEW_CHAR}
        self.short_lengths = frozenset(ln for ln in chars if ln < self.char_gram)
        self.has_long_chars = self.char_gram in chars

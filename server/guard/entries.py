"""GuardEntries: the derived, storable form of one Forget — keyed digests and sealed embeddings.

This is what the ledger persists and what the guard is rebuilt from on restart; it never holds
plaintext. A record is 11 bytes: view (word / char / char prefix / char suffix), kind (exact / name / attribute / context / subject), length
(words or characters of the hashed string) and the 8-byte keyed digest. The length lets the scanner
compute only the string lengths that some entry actually has.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Callable, Iterator

VIEW_WORD, VIEW_CHAR, VIEW_PREFIX, VIEW_SUFFIX = 0, 1, 2, 3
# Short char entries also store digests of their first and last letters (with their length):
# the scanner hashes a span only when some entry starts like it, ends like it and is exactly that
# long, instead of hashing the span from every recent word start.
PREFIX_CHARS = 3
# KIND_CONTEXT: a passage gram that does not contain its subject's name ("studied at the
# University of Brom and now works as"): the same template with the same value is often true of
# someone else, so it blocks only while that subject is in context (named by the prompt or output).
# KIND_SUBJECT: a name of a subject the Forget listed (not one inferred from a question): the full
# name and its other forms (name_forms.py); the subject policy applies to it (config.SUBJECT_POLICIES).
KIND_EXACT, KIND_NAME, KIND_ATTR, KIND_CONTEXT, KIND_SUBJECT = 0, 1, 2, 3, 4
KIND_STAGE = {KIND_EXACT: "exact", KIND_NAME: "entity", KIND_ATTR: "entity", KIND_CONTEXT: "exact",
              KIND_SUBJECT: "entity"}
RECORD = struct.Struct("<BBB8s")
_MAGIC = b"LGE1"
_HEAD = struct.Struct("<4sBH")


def pack_record(view: int, kind: int, length: int, digest: bytes) -> bytes:
    return RECORD.pack(view, kind, length, digest)


def char_records(kind: int, s: str, digest: Callable[[str], bytes], char_gram: int,
                 variants: Callable[[str], list[str]] | None = None) -> list[bytes]:
    """Records for one letters-and-digits string: a prefix gram if long, else whole + prefix;
    and the same for each encoded form `variants` gives (rot13, leet: see encodings.py)."""
    out = _char_records(kind, s, digest, char_gram)
    for v in variants(s) if variants is not None else ():
        out += _char_records(kind, v, digest, char_gram)
    return out


def _char_records(kind: int, s: str, digest: Callable[[str], bytes], char_gram: int) -> list[bytes]:
    if len(s) >= char_gram:
        return [pack_record(VIEW_CHAR, kind, char_gram, digest(s[:char_gram]))]
    # prefix/suffix records carry the *whole* string's length (see GuardIndex.prefix)
    return [pack_record(VIEW_CHAR, kind, len(s), digest(s)),
            pack_record(VIEW_PREFIX, kind, len(s), digest(s[:PREFIX_CHARS])),
            pack_record(VIEW_SUFFIX, kind, len(s), digest(s[-PREFIX_CHARS:]))]


def fingerprint(key_id: bytes, n: int, char_gram: int, normalizer_version: int) -> bytes:
    """Entries only match under the same key, gram sizes and normalization."""
    params = struct.pack("<8sHHH", key_id, n, char_gram, normalizer_version)
    return hashlib.blake2b(params, digest_size=8).digest()


@dataclass(frozen=True)
class GuardEntries:
    forget_id: str
    fingerprint: bytes
    records: bytes  # concatenated 11-byte records, deduplicated
    # AES-GCM (key from the server secret, aad = forget id) over one context-only flag byte per
    # row followed by float32 [n_embeddings, embed_dim]; b"" when the semantic stage is off.
    sealed_embeddings: bytes = b""
    n_embeddings: int = 0
    embed_dim: int = 0

    def __post_init__(self) -> None:
        if len(self.records) % RECORD.size:
            raise ValueError("records must be a whole number of 11-byte records")
        if len(self.fingerprint) != 8:
            raise ValueError("fingerprint must be 8 bytes")

    def __len__(self) -> int:
        return len(self.records) // RECORD.size

    def __repr__(self) -> str:
        return (f"GuardEntries(forget_id={self.forget_id!r}, records={len(self)}, "
                f"embeddings={self.n_embeddings})")

    def iter_records(self) -> Iterator[tuple[int, int, int, bytes]]:
        return RECORD.iter_unpack(self.records)

    def packed_records(self) -> list[bytes]:
        """Each record still packed (11 bytes): hashable, for set differences on replace."""
        size = RECORD.size
        return [self.records[i:i + size] for i in range(0, len(self.records), size)]

    def to_bytes(self) -> bytes:
        fid = self.forget_id.encode()
        return b"".join((
            _HEAD.pack(_MAGIC, 1, len(fid)), fid, self.fingerprint,
            struct.pack("<I", len(self.records)), self.records,
            struct.pack("<IHI", self.n_embeddings, self.embed_dim, len(self.sealed_embeddings)),
            self.sealed_embeddings,
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> GuardEntries:
        try:
            magic, version, flen = _HEAD.unpack_from(data, 0)
            if magic != _MAGIC or version != 1:
                raise ValueError(f"not guard entries (magic {magic!r}, version {version})")
            pos = _HEAD.size
            fid = data[pos:pos + flen].decode()
            pos += flen
            fp = data[pos:pos + 8]
            pos += 8
            (rlen,) = struct.unpack_from("<I", data, pos)
            pos += 4
            records = data[pos:pos + rlen]
            pos += rlen
            n_emb, dim, slen = struct.unpack_from("<IHI", data, pos)
            pos += 10
            sealed = data[pos:pos + slen]
            if len(records) != rlen or len(sealed) != slen or pos + slen != len(data):
                raise ValueError("truncated or trailing bytes")
        except (struct.error, UnicodeDecodeError) as err:
            raise ValueError(f"corrupt guard entries: {err}") from err
        return cls(fid, fp, records, sealed, n_emb, dim)

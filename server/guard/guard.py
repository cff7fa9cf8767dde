"""LeakageGuard: the object the server holds — derive, add, remove, phases, prompts, sessions.

Forget path: `derive` (pure: plaintext -> GuardEntries) -> ledger persists `entries.to_bytes()`
-> `add(entries)` -> acknowledge. Restart path: `add(GuardEntries.from_bytes(blob))` for every
ledger row; no plaintext needed. Every hit goes to the `on_hit` callback (the server turns it into
metrics); the guard itself imports no gRPC, protobuf or Prometheus code, and logs no text.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Callable

import numpy as np

from server.guard.config import GuardConfig
from server.guard.embedder import OnnxMiniLM, SentenceEmbedder
from server.guard.decoded import DECODED, DecodedRuns
from server.guard.encodings import LEET, LEET_GATE
from server.guard.entries import (KIND_CONTEXT, KIND_EXACT, KIND_NAME, KIND_SUBJECT, GuardEntries,
                                  fingerprint)
from server.guard.escapes import EscapedBytes
from server.guard.extract import extract
from server.guard.homoglyphs import homoglyph_map
from server.guard.index import GuardIndex, Owners, Postings
from server.guard.keys import GuardKeys
from server.guard.name_forms import dictionary_words
from server.guard.normalize import NORMALIZER_VERSION
from server.guard.scanner import LexicalScanner
from server.guard.session import GuardSession
from server.guard.stages import SessionFlags, StageEnv, stage_class
from server.guard.values import ALLOW, ForgetItems, GuardHit, PromptVerdict

logger = logging.getLogger(__name__)
# When a prompt needs a hidden-channel view (the same hints that start the views in a session):
_LEET_HINT = re.compile(r"[A-Za-z][0-9]|[0-9][A-Za-z]|[@$|]")
_ESCAPE_HINT = re.compile(r"(?:%|\\[xX]|0[xX])[0-9A-Fa-f]{2}|[0-9A-Fa-f]{2}[ :,-][0-9A-Fa-f]{2}\b")
_RUN_HINT = re.compile(r"[A-Za-z0-9+/=_-]{16,}")


class GuardEntriesMismatch(ValueError):
    """Entries were derived under another secret, gram size or normalizer version."""


class LeakageGuard:
    def __init__(self, config: GuardConfig, secret: bytes,
                 on_hit: Callable[[GuardHit], None] | None = None,
                 embedder: SentenceEmbedder | None = None) -> None:
        self.config = config
        self._keys = GuardKeys(secret)
        self._index = GuardIndex(config.char_gram)
        self._on_hit = on_hit
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._embedder_failed = False
        env = StageEnv(config, self._keys, self._index, self._get_embedder)
        self._stages = [stage_class(name)(env) for name in config.stages]
        self._fingerprint = fingerprint(self._keys.key_id, config.n, config.char_gram,
                                        NORMALIZER_VERSION)

    # ------------------------------------------------------------------ forget side
    def derive(self, forget_id: str, items: ForgetItems, semantic: bool = True) -> GuardEntries:
        """Plaintext -> keyed digests and sealed embeddings. Pure: changes no guard state.

        Embedding costs milliseconds per sentence; for the fastest acknowledgement derive with
        semantic=False first, add and ack, then derive the full entries and add them again
        (same forget id: the second add replaces the first)."""
        cfg = self.config
        ex = extract(items, infer=cfg.infer_subjects, surnames=cfg.match_surnames,
                     min_chars=cfg.min_entity_chars, semantic_min_words=cfg.semantic_min_words)
        records: dict[bytes, None] = {}
        sealed, rows, dim = b"", 0, 0
        for stage in self._stages:
            if stage.name == "semantic" and not semantic:
                continue
            d = stage.derive(ex)
            records.update(dict.fromkeys(d.records))
            if d.embeddings is not None and len(d.embeddings):
                rows, dim = d.embeddings.shape
                ctx = d.context_only if d.context_only is not None else np.zeros(rows, bool)
                # sealed payload: one context-only flag byte per row, then float32 [rows, dim]
                payload = ctx.astype(np.uint8).tobytes() + d.embeddings.astype(np.float32).tobytes()
                sealed = self._keys.seal(payload, forget_id.encode())
        return GuardEntries(forget_id, self._fingerprint, b"".join(records), sealed, rows, dim)

    def add(self, entries: GuardEntries, phase: str | None = None) -> None:
        """Make entries live for every session from its next push. Thread-safe, incremental.
        `phase` defaults to the forget's current one, or "before_adapter" for a new forget."""
        if entries.fingerprint != self._fingerprint:
            raise GuardEntriesMismatch(
                f"guard entries of {entries.forget_id!r} were derived under another secret or "
                "n / char_gram / normalizer version")
        emb = ctx = None
        if entries.n_embeddings and "semantic" in self.config.stages:
            plain = self._keys.open(entries.sealed_embeddings, entries.forget_id.encode())
            rows = entries.n_embeddings
            ctx = np.frombuffer(plain[:rows], np.uint8).astype(bool)
            emb = np.frombuffer(plain[rows:], np.float32).reshape(rows, entries.embed_dim)
        self._index.add(entries, emb, ctx, phase)

    def add_items(self, forget_id: str, items: ForgetItems) -> GuardEntries:
        """derive + add; returns the entries for the ledger."""
        entries = self.derive(forget_id, items)
        self.add(entries)
        return entries

    def set_phase(self, forget_id: str, phase: str) -> None:
        self._index.set_phase(forget_id, phase)

    def remove(self, forget_id: str) -> None:
        self._index.remove(forget_id)

    def __contains__(self, forget_id: str) -> bool:
        return forget_id in self._index

    def entries_of(self, forget_id: str) -> GuardEntries | None:
        """The entries live for `forget_id` (what a replica compares with the shared ledger's)."""
        return self._index.entries_of(forget_id)

    def stats(self) -> dict[str, int]:
        return self._index.stats()

    def warm_up(self) -> None:
        """Load lazy parts (homoglyph map, the dictionary of name_forms, the embedder) before the
        first request (or Forget) needs them."""
        homoglyph_map()
        dictionary_words()
        self._get_embedder()

    # ------------------------------------------------------------------ request side
    def content_digest(self, data: bytes) -> str:
        """A keyed digest of a forget request's content (see GuardKeys.content_digest)."""
        return self._keys.content_digest(data)

    def check_prompt(self, prompt: str) -> PromptVerdict:
        """Does the prompt paste a forgotten passage or name a forgotten subject?"""
        policy = self.config.prompt_policy
        if policy == "off" or not prompt:
            return ALLOW
        sink = _PromptSink()
        scanner = LexicalScanner(self._index, self._keys, self.config.n, self.config.char_gram,
                                 self.config.max_word_chars, 1 << 30, sink)
        scanner.feed(prompt, 0)
        scanner.finish(len(prompt))
        self._scan_prompt_views(prompt, sink)
        sink.resolve()
        if not sink.found:
            return ALLOW
        hits = tuple(GuardHit(fid, stage, self._index.phases.get(fid, "before_adapter"), "prompt")
                     for fid, stage in sink.found)
        for h in hits:
            self._report(h)
        listed = frozenset() if self.config.subject_policy == "off" else frozenset(
            fid for fid in sink.listed if self._index.phases.get(fid) == "before_adapter")
        return PromptVerdict("refuse" if policy == "refuse" else "arm", hits,
                             frozenset(fid for fid, _ in sink.found), listed)

    def session(self, prompt: str = "", verdict: PromptVerdict | None = None) -> GuardSession:
        """A session for one request. Pass the verdict if check_prompt was already called."""
        if verdict is None:
            verdict = self.check_prompt(prompt)
        strict = verdict.action != "allow"
        prompt_forgets = verdict.subject_forgets if strict else frozenset()
        flags = SessionFlags(armed=strict, prompt_forgets=prompt_forgets, context=set(prompt_forgets),
                             prompt_subjects=verdict.policy_forgets if strict else frozenset())
        return GuardSession(self.config, self._index, self._keys, self._stages, self._report,
                            flags, prompt)

    def filter_text(self, text: str, prompt: str = "",
                    verdict: PromptVerdict | None = None) -> tuple[str, GuardHit | None]:
        """Unary responses: the same checks as a stream, on the whole text at once."""
        s = self.session(prompt, verdict)
        first = s.push(text)
        if first.stop:
            return first.release, first.hit
        last = s.finish()
        return first.release + last.release, first.hit or last.hit

    # ------------------------------------------------------------------ internals
    def _scan_prompt_views(self, prompt: str, sink: _PromptSink) -> None:
        """The session's hidden-channel views (leet, escapes, decoded runs), run once over the
        whole prompt, each only when the prompt shows a hint of it. rot13 needs no view. The
        prompt sink never stops a scan, so every view reads the whole prompt."""
        cfg, enc, end = self.config, self.config.encodings, len(prompt)

        def scanner(n: int = cfg.n, **kw) -> LexicalScanner:
            return LexicalScanner(self._index, self._keys, n, cfg.char_gram, cfg.max_word_chars,
                                  1 << 30, sink, **kw)

        if "leet" in enc and _LEET_HINT.search(prompt):
            v = scanner(1, table=LEET, gate=LEET_GATE)
            v.feed(prompt, 0)
            v.finish(end)
        if "escapes" in enc and _ESCAPE_HINT.search(prompt):
            e = EscapedBytes(scanner())
            e.feed(prompt, 0)
            e.finish(end)
        if any(x in enc for x in DECODED) and _RUN_HINT.search(prompt):
            runs = DecodedRuns(enc, cfg.encoded_min_chars, scanner, lambda a, b: prompt[a:b],
                               cfg.encoded_depth)
            runs.feed(prompt, 0)
            runs.finish(end)

    def _report(self, hit: GuardHit) -> None:
        logger.debug("guard hit: forget %s stage %s phase %s", hit.forget_id, hit.stage, hit.phase)
        if self._on_hit is not None:
            try:
                self._on_hit(hit)
            except Exception:  # a metrics bug must not break a stream
                logger.exception("guard on_hit callback failed")

    def _get_embedder(self) -> SentenceEmbedder | None:
        cfg = self.config
        if self._embedder is not None or self._embedder_failed or not cfg.semantic_enabled:
            return self._embedder
        with self._embedder_lock:
            if self._embedder is None and not self._embedder_failed:
                if cfg.model_cache_dir is None:
                    self._embedder_failed = True
                    logger.warning("semantic stage disabled: no model_cache_dir configured")
                    return None
                try:
                    self._embedder = OnnxMiniLM(cfg.model_cache_dir, cfg.semantic_precision,
                                                cfg.embed_threads)
                except Exception:
                    self._embedder_failed = True
                    logger.exception("semantic stage disabled: could not load the embedder")
        return self._embedder


class _PromptSink:
    """Collects what a prompt contains: pasted passages (exact) and named subjects (entity)."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], None] = {}
        self.listed: dict[str, None] = {}  # forgets whose listed subject is named in full
        # Owners of name-free passage grams (often thousands: templates); they count as a pasted
        # passage only for a subject the prompt also names — resolved once the prompt is read.
        self._context: list[Owners] = []

    def on_postings(self, pos: int, found: list[Postings], raw_at: int) -> bool:
        for p in found:
            for fid in p[KIND_EXACT]:
                self.found[(fid, "exact")] = None
            for fid in p[KIND_NAME]:
                self.found[(fid, "entity")] = None
            for fid in p[KIND_SUBJECT]:
                self.listed[fid] = None
            if p[KIND_CONTEXT]:
                self._context.append(p[KIND_CONTEXT])
        return False

    def resolve(self) -> None:
        named = [fid for fid, stage in self.found if stage == "entity"]
        for fid in named:
            if any(fid in owners for owners in self._context):
                self.found[(fid, "exact")] = None

    def on_sentence(self, first: int, end: int, raw_at: int) -> bool:
        return False

"""Semantic stage: sentence embeddings of forgotten facts, for paraphrases the lexical stages miss.

Derivation embeds each forgotten sentence (an answer that is a sentence, else "question answer"),
plus the same sentence without the subject's name as a *context-only* row: it counts only for a
forget whose subject the prompt named or the output already mentioned, so "She was born in
Oberwil." after "Where was Marta Kowalczyk born?" is caught without matching every "she".
In a session the stage checks each completed sentence when armed (a forgotten name appeared, or
the prompt put the request in strict mode) or always, by config; while it may check, the session
holds the current sentence back. Armed, it compares the sentence with the rows of the forgets in
context only (whose name appeared / the prompt named); "always" also scans every named row. A hit
is a row whose cosine reaches the calibrated threshold. Costs milliseconds per sentence (one
MiniLM call), never per token.
"""

from __future__ import annotations

import logging

import numpy as np

from server.guard.extract import Extracted
from server.guard.normalize import semantic_text
from server.guard.stages.base import (Derived, OutputFilter, SessionFlags, StageEnv,
                                      register_stage)

logger = logging.getLogger(__name__)


@register_stage("semantic")
class SemanticStage(OutputFilter):
    def derive(self, ex: Extracted) -> Derived:
        cfg = self.env.config
        if not cfg.semantic_enabled or not ex.sentences:
            return Derived()
        embedder = self.env.embedder()
        if embedder is None:
            return Derived()
        texts = [semantic_text(t) for t, _ in ex.sentences]
        return Derived(embeddings=embedder.embed(texts),
                       context_only=np.array([c for _, c in ex.sentences], dtype=bool))

    def __init__(self, env: StageEnv) -> None:
        super().__init__(env)
        self._enabled = env.config.semantic_enabled
        self._always = env.config.semantic == "always"

    def holds_sentences(self, state: None, flags: SessionFlags) -> bool:
        # Called at every word end: cheap checks first. No rows -> nothing to match -> no hold.
        return self._enabled and (flags.armed or self._always) and self.env.index.semantic.rows > 0

    def on_sentence(self, state: None, flags: SessionFlags, text: str) -> str | None:
        cfg = self.env.config
        if not self.holds_sentences(state, flags) or len(text.split()) < cfg.semantic_min_words:
            return None
        embedder = self.env.embedder()
        if embedder is None:
            return None
        snap = self.env.index.semantic  # one consistent snapshot for this sentence
        v = embedder.embed([text])[0]
        index, thr = self.env.index, cfg.semantic_threshold
        # Forgets in context first (named by the prompt or seen in this output): all their rows,
        # name-free ones included. Only a few rows, so this is cheap at any index size.
        for fid in list(flags.context):
            rows = [r for r in index.rows_of(fid) if r < snap.rows]
            if rows and float((snap.matrix[rows] @ v).max()) >= thr:
                return fid
        if not self._always:
            return None
        # "always": every named row. A full scan reads rows x 384 floats per sentence
        # (memory-bound: ~25 ms per 100k rows here); an ANN index is the next step beyond that.
        sims = np.where(snap.context_only, -1.0, snap.matrix @ v)  # [rows]
        best = int(np.argmax(sims))
        if sims[best] >= thr:
            return snap.owners[best]  # None if removed meanwhile (its row is zero anyway)
        return None

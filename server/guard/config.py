"""Guard configuration and the small closed vocabularies (stages, phases, policies).

One frozen dataclass the server builds from its settings; every default carries its reason. This
module reads no environment and knows nothing about gRPC or metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Bounded label sets: these strings become Prometheus label values in the server.
PHASES = ("before_adapter", "after_adapter")
STAGE_NAMES = ("exact", "entity", "semantic")
SOURCES = ("output", "prompt")
POLICIES = ("end", "redact")
PROMPT_POLICIES = ("off", "arm", "refuse")
# What a forgotten *subject* (a name the Forget listed) blocks before its adapter is verified:
# off = the name only arms (the attribute and semantic checks decide); value = the name within
# the entity window of a capitalised, numeric or date-like word; name = the name alone. See
# subject_policy.py.
SUBJECT_POLICIES = ("off", "value", "name")
SEMANTIC_MODES = ("off", "armed", "always")
SEMANTIC_PRECISIONS = ("fp32", "int8")
ENCODINGS = ("rot13", "leet", "base64", "base32", "hex", "escapes")
MAX_ENCODED_DEPTH = 4  # layers of encodings inside encodings: each adds decoders per run


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class GuardConfig:
    # Word n-grams: 8 words is long enough that a shared phrase ("was born in the city of") is
    # not a forgotten passage, short enough that a copied sentence is caught within one clause.
    n: int = 8
    # Letters-and-digits grams anchored at word starts catch "J o h n", "J-o-h-n" and injected
    # punctuation, which split words and so defeat the word view. 40 letters ~ the span of n=8
    # words: 24 (the first guess) is ~5 words, stricter than the word view, and blocked 39 % of
    # *other* people's demo sentences ("studied at the University of" is 24 letters) vs 7 % at 40,
    # with the same recall on obfuscated copies (bench/guard.py, false-positive table).
    char_gram: int = 40
    # Items shorter than n words are stored whole (char view) when they are distinctive on their
    # own: at least this many words, or at least `short_min_digits` digits (phone / id numbers).
    # Shorter, generic items ("Lisbon", "in 1961") only block next to a forgotten name (entity).
    short_min_words: int = 4
    short_min_digits: int = 6
    # Shortest letters-and-digits string stored for a name or attribute: 1-2 letter strings
    # would match everywhere.
    min_entity_chars: int = 3
    # A name and an attribute of the same forget within this many letters/digits of each other
    # block (~15 words; counted in letters so spaced-out text cannot stretch it).
    entity_window_chars: int = 80
    # Passage grams that do not contain the subject's name ("studied at the University of Brom
    # and now works as") block only while the subject is in context (named by the prompt or the
    # output): the same template with the same value is often true of someone else. Without it,
    # 23.5 % of other demo people's bio sentences were blocked with 100 people forgotten, 35.5 %
    # with 2,000; with it 0 %, verbatim and obfuscated recall unchanged (bench/guard.py, false-
    # positive table). The price: a name-free verbatim copy passes unless the subject is in
    # context. Digit runs and short whole answers still block on their own; a forget that names
    # no subject keeps every gram unconditional.
    exact_needs_subject: bool = True
    # "Varga" alone also counts as a sighting of "Elena Varga" (last word, >= 4 letters).
    match_surnames: bool = True
    # Subject names are also taken from QA questions ("Where was Elena Varga born?") when the
    # Forget request names no subjects.
    infer_subjects: bool = True
    stages: tuple[str, ...] = STAGE_NAMES
    semantic: str = "armed"  # off | armed (after a name or a strict prompt) | always
    # Calibrated on the demo corpus with bench/guard.py: paraphrases vs other people's facts are
    # separable for both precisions (fp32: >= 0.774 vs <= 0.664; int8: >= 0.747 vs <= 0.671);
    # 0.715 lies in both gaps. Recalibrate when the model, precision or corpus changes.
    semantic_threshold: float = 0.715
    # int8 (dynamic quantisation) is ~2x faster than fp32 here; its cosines drift up to ~0.04
    # from fp32, so rows and queries must come from the same precision (and calibration).
    semantic_precision: str = "int8"
    semantic_min_words: int = 4  # shorter sentences carry no fact worth embedding
    # Force a sentence boundary after this many words so an armed stream's hold stays bounded.
    semantic_max_sentence_words: int = 64
    model_cache_dir: Path | None = None  # where the ONNX export is cached; None = no semantic
    policy: str = "end"  # end the stream | redact the span and continue
    prompt_policy: str = "arm"  # off | arm strict mode | refuse up front
    # Subject policy (SUBJECT_POLICIES). "off" here keeps the guard alone to the stage rules
    # above; the server defaults to "name" (settings.py says why). "value" lets harmless mentions
    # through ("I have not heard of X") but not facts written without capitals ("X works as a
    # tinker"); "name" blocks every mention.
    subject_policy: str = "off"
    # Neutral on purpose: never echoes or hints at what matched.
    neutral_message: str = "I can't continue with this response."
    redaction_text: str = "[…]"
    # A "word" longer than this is cut so one endless token run cannot grow the hold-back.
    max_word_chars: int = 128
    embed_threads: int = 1
    # Hidden channels (encodings.py, decoded.py): rot13 and leet forms are stored at derive time
    # (rot13, and the leet view's folded digests) and scanned in a leet view; base64 / base32 / hex
    # runs are decoded and scanned. Costs: ~2x char records per forget; the leet view's per-token work.
    # "escapes": %4A, \x4a, 0x4a and hex pairs with separators (escapes.py), started only near them.
    encodings: tuple[str, ...] = ("rot13", "leet", "base64", "base32", "hex", "escapes")
    # A run of base64-alphabet chars is decoded from this length on: 16 chars = 12 bytes, about
    # two words. Shorter runs are ordinary words (held like any word in progress).
    encoded_min_chars: int = 16
    # Encodings inside encodings: layers decoded in all (2: base64 of hex, hex of base64, base64 of
    # URL escapes). Each layer reads the text the one above decoded, with its own decoders.
    encoded_depth: int = 2

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"n must be >= 2, got {self.n}")
        if not 8 <= self.char_gram <= 255:
            raise ValueError(f"char_gram must be in [8, 255], got {self.char_gram}")
        if self.min_entity_chars < 3:  # the scanner's prefix filter reads 3 letters
            raise ValueError(f"min_entity_chars must be >= 3, got {self.min_entity_chars}")
        if not 0.0 < self.semantic_threshold <= 1.0:
            raise ValueError(f"semantic_threshold must be in (0, 1], got {self.semantic_threshold}")
        _check("semantic", self.semantic, SEMANTIC_MODES)
        _check("semantic_precision", self.semantic_precision, SEMANTIC_PRECISIONS)
        _check("policy", self.policy, POLICIES)
        _check("prompt_policy", self.prompt_policy, PROMPT_POLICIES)
        _check("subject_policy", self.subject_policy, SUBJECT_POLICIES)
        for s in self.stages:
            _check("stage", s, STAGE_NAMES)
        for e in self.encodings:
            _check("encoding", e, ENCODINGS)
        object.__setattr__(self, "encodings", tuple(self.encodings))
        if self.encoded_min_chars < 8:
            raise ValueError(f"encoded_min_chars must be >= 8, got {self.encoded_min_chars}")
        if not 1 <= self.encoded_depth <= MAX_ENCODED_DEPTH:
            raise ValueError(f"encoded_depth must be in [1, {MAX_ENCODED_DEPTH}], got {self.encoded_depth}")
        if self.model_cache_dir is not None:
            object.__setattr__(self, "model_cache_dir", Path(self.model_cache_dir))

    @property
    def semantic_enabled(self) -> bool:
        return "semantic" in self.stages and self.semantic != "off"


def check_phase(phase: str) -> str:
    _check("phase", phase, PHASES)
    return phase


__all__ = ["GuardConfig", "MAX_ENCODED_DEPTH", "PHASES", "STAGE_NAMES", "SOURCES", "POLICIES",
           "PROMPT_POLICIES", "SEMANTIC_MODES", "SUBJECT_POLICIES", "check_phase"]

"""Configuration of the demo model build: corpus size, model shape and training schedule.

Only values live here; the builder interprets them. Every field is part of the cache key, so
changing any of them builds a new model directory instead of reusing a stale one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from unlearn_engine.demo.corpus import CorpusSpec


@dataclass(frozen=True)
class DemoConfig:
    """Full demo by default; ``DemoConfig.small()`` is the fast preset for test suites."""

    # --- corpus (ignored when a user corpus is given) ---
    n_people: int = 40  # trained people: enough that forgetting 10 % is 4 people
    n_holdout: int = 10  # never-trained people: the "never seen" baseline
    corpus_seed: int = 0

    # --- tokenizer ---
    # Upper bound only: BPE stops once every word is a single token (~1.8k for the full corpus),
    # which is what makes one-token surnames and values memorise fast.
    vocab_size: int = 4096

    # --- model (Llama-style; ~3.6 M parameters, ~0.5 M of them the tied embeddings) ---
    n_layers: int = 4
    hidden_size: int = 256
    n_heads: int = 4
    intermediate_size: int = 688  # ~8/3 x hidden, the SwiGLU ratio Llama uses
    max_positions: int = 256  # longest training sequence (a bio) is ~60 tokens
    tie_embeddings: bool = True  # halves embedding parameters; no loss of memorisation seen

    # --- training ---
    seed: int = 0
    lr: float = 3e-3  # tiny models memorise best with a high peak LR (docs/architecture.md#measured: 2e-3..3e-3)
    min_lr_ratio: float = 0.1  # cosine decays to lr * this, not to zero: keeps late epochs useful
    warmup_steps: int = 30
    # Cosine decay runs over `schedule_epochs`, then the LR stays at its floor until `max_epochs`
    # (a hard cap). Memorisation consolidates as the LR comes down; with this horizon the full
    # corpus reaches its QA target in ~22 epochs and its bio target in ~30.
    schedule_epochs: int = 40
    max_epochs: int = 80
    batch_size: int = 32
    weight_decay: float = 0.0  # decay fights memorisation, which is the point of this model
    grad_clip: float = 1.0
    # Loss weight of question tokens relative to answer tokens. 0 spends all capacity on answers;
    # the question is always given at inference, so the model never has to produce it.
    question_loss_weight: float = 0.0
    train_bios: bool = True  # bios are trained on (full loss) so verbatim completion is testable
    # Stop once this fraction of training QA answers is reproduced exactly under teacher forcing
    # (which implies the greedy answer is exact). Checked each epoch from the training logits
    # first, then confirmed with a clean pass, so the check costs almost nothing.
    target_accuracy: float = 0.98
    # Same for bios: the share whose text after the first sentence is reproduced exactly. Lower
    # than for QA because a bio is ~45 tokens that must all be right.
    target_text_accuracy: float = 0.9

    # --- report ---
    eval_batch_size: int = 128  # greedy evaluation batch; answers are generated up to EOS

    @classmethod
    def small(cls) -> DemoConfig:
        """Fast preset for tests: same builder, fewer people."""
        return cls(n_people=14, n_holdout=4)

    def corpus_spec(self) -> CorpusSpec:
        return CorpusSpec(n_people=self.n_people, n_holdout=self.n_holdout, seed=self.corpus_seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> DemoConfig:
        return dataclasses.replace(self, **changes)

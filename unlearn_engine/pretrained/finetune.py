"""Fine-tune a pretrained base on a QA corpus, with or without some people: the literature's
unlearning protocol (TOFU: fine-tune on fictitious people, forget some, compare with the same
base fine-tuned without them), cached so a rerun does not train again.

    recipe = FinetuneRecipe()  # the recipe measured on SmolLM2
    original = finetuned_model(base_dir, train_qa, recipe, cache_dir)
    retrained = finetuned_model(base_dir, train_qa, recipe, cache_dir, exclude_people=forget)

Training reuses the demo model's loop (``demo.trainer.train``: AdamW, warmup + cosine, stop once
the training answers are reproduced exactly under teacher forcing) on sequences encoded the way
the engine scores and generates (``encoding.encode_example``: the model's chat template when it
has one, loss on the answer and EOS only). A build is keyed by the base's digest, the training
examples, the excluded people and the recipe, and written through ``cache.build_once``::

    <cache_dir>/finetuned/<base dir name>-<key>/
        config.json  model.safetensors  tokenizer files
        train.jsonl         # what it was trained on (excluded people already removed)
        finetune.json       # recipe, base digest, timings, accuracy; written last

``qa_subset`` picks a smaller protocol from a corpus (fewer people, fewer phrasings of each
fact) when CPU time is short. It evaluates nothing beyond the stopping check (callers do:
``bench/unlearn_quality.py --model``), and reads no environment variables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from unlearn_engine.cache import build_once
from unlearn_engine.data.corpus import save_examples
from unlearn_engine.data.records import Example
from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.trainer import Example as TrainSequence  # a shifted, weighted sequence
from unlearn_engine.demo.trainer import train
from unlearn_engine.encoding import IGNORE, encode_example, pad_id
from unlearn_engine.pretrained.fetch import MANIFEST_NAME, load_manifest
from unlearn_engine.trainer import load_base

log = logging.getLogger(__name__)

# Bump when a code change alters what a build produces, so old cache entries are not reused.
FINETUNE_VERSION = 1
REPORT_NAME = "finetune.json"
TRAIN_NAME = "train.jsonl"


@dataclass(frozen=True)
class FinetuneRecipe:
    """Full-weight fine-tuning schedule. Every field is part of the cache key."""

    # TOFU fine-tunes 7B models at 1e-5 for 5 epochs; SmolLM2-135M memorising long answers in
    # 6 epochs needs a larger step: 2e-4 gave 97 % exact training answers
    # (bench/results/smollm2_long/).
    lr: float = 2e-4
    min_lr_ratio: float = 0.1  # cosine floor, as the demo builder
    warmup_steps: int = 5
    schedule_epochs: int = 6  # cosine horizon
    max_epochs: int = 6  # hard cap: CPU time is the constraint (~8 CPU s a step on SmolLM2)
    batch_size: int = 8
    weight_decay: float = 0.01  # TOFU's
    grad_clip: float = 1.0
    # Stop early once this share of training answers is reproduced exactly (teacher forced).
    target_accuracy: float = 0.9
    max_length: int = 192  # tokens per sequence (chat template + question + answer + EOS)
    eval_batch_size: int = 16  # the stopping check's batch: logits are [B, T, 49k] on SmolLM2
    seed: int = 0

    def demo_config(self) -> DemoConfig:
        """The demo trainer's config carrying this schedule (its model fields are unused)."""
        return DemoConfig().replace(
            lr=self.lr, min_lr_ratio=self.min_lr_ratio, warmup_steps=self.warmup_steps,
            schedule_epochs=self.schedule_epochs, max_epochs=self.max_epochs,
            batch_size=self.batch_size, weight_decay=self.weight_decay,
            grad_clip=self.grad_clip, target_accuracy=self.target_accuracy,
            target_text_accuracy=0.0, eval_batch_size=self.eval_batch_size, seed=self.seed)


def qa_subset(corpus: Sequence[Example], n_people: int = 0, phrasings: int = 0,
              seed: int = 0) -> tuple[Example, ...]:
    """The QA of ``n_people`` trained people (drawn with ``seed``; 0: all) with at most
    ``phrasings`` train questions per fact (0: all; a fact is a person's answer), plus every
    paraphrase of theirs and every holdout question, in corpus order. Free texts are dropped."""
    qa = [e for e in corpus if e.is_qa]
    people = sorted({e.subject for e in qa if e.split == "train"})
    if n_people and n_people < len(people):
        people = random.Random(seed).sample(people, n_people)
    chosen, seen = set(people), {}
    out = []
    for e in qa:
        if e.split == "holdout":
            out.append(e)
        elif e.subject in chosen:
            if e.split == "train" and phrasings:
                n = seen[(e.subject, e.target)] = seen.get((e.subject, e.target), 0) + 1
                if n > phrasings:
                    continue
            out.append(e)
    return tuple(out)


def base_digest(base_dir: str | Path) -> str:
    """What identifies the base weights: a fetched model's pinned GGUF sha256, else the sha256
    of its weight files (a user's own directory)."""
    base_dir = Path(base_dir)
    if (base_dir / MANIFEST_NAME).is_file():
        return str(load_manifest(base_dir)["sha256"])
    h = hashlib.sha256()
    files = sorted(base_dir.glob("*.safetensors")) or sorted(base_dir.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"no weights (*.safetensors, *.bin) in {base_dir}")
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def cache_key(digest: str, examples: Sequence[Example], recipe: FinetuneRecipe,
              exclude_people: Sequence[str] = ()) -> str:
    """Stable 16-hex-digit key of everything that determines the fine-tuned model."""
    h = hashlib.sha256(json.dumps({"version": FINETUNE_VERSION, "base": digest,
                                   "recipe": asdict(recipe),
                                   "exclude": sorted(set(exclude_people))},
                                  sort_keys=True).encode())
    for ex in examples:
        h.update(json.dumps(ex.to_record(), sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()[:16]


def training_sequences(tokenizer, examples: Sequence[Example], max_length: int
                       ) -> list[TrainSequence]:
    """The demo trainer's shifted sequences from engine examples, encoded as the engine scores
    them: only answer tokens (and EOS) carry loss and must be reproduced exactly."""
    out = []
    for ex in examples:
        ids, labels = encode_example(tokenizer, ex, max_length)
        shifted = labels[1:]
        scored = [i for i, t in enumerate(shifted) if t != IGNORE]
        if not scored:
            raise ValueError(f"no answer tokens left within max_length {max_length}")
        out.append(TrainSequence(tuple(ids[:-1]), tuple(t if t != IGNORE else 0 for t in shifted),
                             tuple(0.0 if t == IGNORE else 1.0 for t in shifted), True,
                             scored[0]))
    return out


def is_built(path: str | Path) -> bool:
    return (Path(path) / REPORT_NAME).is_file()


def load_report(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / REPORT_NAME).read_text())


def finetuned_model(base_dir: str | Path, examples: Sequence[Example], recipe: FinetuneRecipe,
                    cache_dir: str | Path, exclude_people: Sequence[str] = ()) -> Path:
    """The directory of ``base_dir`` fine-tuned on the QA ``examples`` minus ``exclude_people``,
    training it first unless that exact build is cached."""
    qa = [e for e in examples if e.is_qa]
    if len(qa) != len(examples):
        raise ValueError("fine-tuning takes QA examples only (free texts have no question)")
    exclude = tuple(dict.fromkeys(exclude_people))
    unknown = sorted(set(exclude) - {e.subject for e in qa})
    if unknown:
        raise ValueError(f"cannot exclude people absent from the training examples: {unknown}")
    base_dir = Path(base_dir)
    digest = base_digest(base_dir)
    key = cache_key(digest, qa, recipe, exclude)
    target = Path(cache_dir).expanduser() / "finetuned" / f"{base_dir.name}-{key}"
    kept = [e for e in qa if e.subject not in set(exclude)]
    if not kept:
        raise ValueError("no training examples left after the exclusions")
    return build_once(target, lambda tmp: _build_into(tmp, base_dir, digest, kept, recipe,
                                                      exclude, key), is_built)


def _build_into(out: Path, base_dir: Path, digest: str, examples: list[Example],
                recipe: FinetuneRecipe, exclude: tuple[str, ...], key: str) -> None:
    model, tok = load_base(base_dir)
    sequences = training_sequences(tok, examples, recipe.max_length)
    log.info("fine-tuning %s: %d QA of %d people (%d excluded), %s", base_dir.name,
             len(sequences), len({e.subject for e in examples}), len(exclude), recipe)
    cpu0 = time.process_time()
    result = train(model, sequences, recipe.demo_config(), pad_id(tok))
    cpu_s = time.process_time() - cpu0
    model.save_pretrained(out)
    tok.save_pretrained(out)
    save_examples(examples, out / TRAIN_NAME)
    report = {
        "cache_key": key, "version": FINETUNE_VERSION, "base": str(base_dir),
        "base_digest": digest, "recipe": asdict(recipe), "excluded_people": list(exclude),
        "trained_people": sorted({e.subject for e in examples}),
        "n_train_sequences": len(sequences),
        "epochs": result.epochs, "steps": result.steps,
        "final_loss": round(result.final_loss, 5),
        "teacher_forced_accuracy": result.teacher_forced_accuracy,
        "reached_target": result.reached_target,
        "train_seconds": round(result.seconds, 2), "train_cpu_seconds": round(cpu_s, 2),
        "torch_threads": torch.get_num_threads(),
    }
    # Written last: its presence marks the directory as complete (see is_built).
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")

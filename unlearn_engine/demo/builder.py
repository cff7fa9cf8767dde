"""Build (or fetch from cache) the demo model: tokenizer + tiny Llama trained on the corpus.

A build produces a standard Hugging Face model directory::

    <cache_dir>/demo-<key>/
        config.json  model.safetensors  generation_config.json
        tokenizer.json  tokenizer_config.json
        corpus.jsonl        # the whole corpus, all splits (what was and was not trained on)
        build_report.json   # timings, epochs, loss, fact-span accuracies, config

``<key>`` hashes the corpus content, the config and the excluded people, so the same inputs
always map to the same directory and a cached build returns at once. Directories are written
under a temporary name and renamed into place, and a lock file keeps two processes from building
the same key twice. Excluding people gives the gold-standard "retrained without them" model.

This module does not generate corpora or define the training loop (``corpus.py``,
``trainer.py``), and it reads no environment variables: callers pass the cache directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from unlearn_engine.cache import build_once
from unlearn_engine.demo.accuracy import evaluate_records, verbatim_completion_rate
from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.corpus import Corpus, generate_corpus, read_jsonl, write_jsonl
from unlearn_engine.demo.tokenizer import train_tokenizer
from unlearn_engine.demo.trainer import StepCallback, new_model, train, training_examples

log = logging.getLogger(__name__)

# Bump when a code change alters what a build produces, so old cache entries are not reused.
BUILDER_VERSION = 1
REPORT_NAME = "build_report.json"
CORPUS_NAME = "corpus.jsonl"


def cache_key(corpus: Corpus, config: DemoConfig, exclude_people: Sequence[str] = ()) -> str:
    """Stable 16-hex-digit key of everything that determines the built model."""
    h = hashlib.sha256()
    h.update(json.dumps({"builder": BUILDER_VERSION, "config": config.to_dict(),
                         "exclude": sorted(set(exclude_people))}, sort_keys=True).encode())
    for rec in (*corpus.qa, *corpus.texts):
        h.update(json.dumps(rec.to_json(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def build_demo_model(cache_dir: str | Path, config: DemoConfig | None = None,
                     corpus: Corpus | str | Path | None = None,
                     exclude_people: Sequence[str] = (),
                     num_threads: int = 1, on_step: StepCallback | None = None) -> Path:
    """Return the model directory for these inputs, building it first if it is not cached.

    ``corpus`` is a ``Corpus``, a JSONL path, or ``None`` for the generated demo corpus.
    ``exclude_people`` are dropped from training (but kept in ``corpus.jsonl`` and evaluated
    under ``accuracy.excluded``). ``num_threads`` sets torch's intra-op threads for the build
    only (restored afterwards). It defaults to 1: a model this small gains little from more
    threads, on a small shared machine two threads ran several times *slower* than one
    (docs/architecture.md#measured, and the small preset here: 499 s with 2 threads vs ~150 s with 1), and a
    fixed thread count keeps builds bit-for-bit reproducible whatever the caller's setting.
    ``on_step`` follows training (see ``trainer.train``); a cache hit never calls it.
    """
    config = config or DemoConfig()
    if corpus is None:
        corpus = generate_corpus(config.corpus_spec())
    elif not isinstance(corpus, Corpus):
        corpus = read_jsonl(corpus)
    exclude = tuple(dict.fromkeys(exclude_people))
    unknown = [p for p in exclude if p not in corpus.people]
    if unknown:
        raise ValueError(f"cannot exclude unknown people {unknown}; the corpus has "
                         f"{len(corpus.people)} people, e.g. {list(corpus.people[:5])}")

    cache_dir = Path(cache_dir).expanduser()
    key = cache_key(corpus, config, exclude)
    target = cache_dir / f"demo-{key}"
    if is_built(target):
        log.debug("demo model cache hit: %s", target)
        return target
    build_once(target, lambda tmp: _build_into(tmp, corpus, config, exclude, key, num_threads, on_step),
               is_built)
    log.info("demo model built: %s", target)
    return target


def default_demo_model(cache_dir: str | Path, small: bool = False) -> Path:
    """The embedded default model (full or small preset); built on first use, then cached."""
    return build_demo_model(cache_dir, DemoConfig.small() if small else DemoConfig())


def is_built(path: str | Path) -> bool:
    """A directory is complete once its report exists: the report is written last."""
    return (Path(path) / REPORT_NAME).is_file()


def load_report(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / REPORT_NAME).read_text())


def load_corpus(model_dir: str | Path) -> Corpus:
    """The corpus a built model came from (all splits; see the report for exclusions)."""
    return read_jsonl(Path(model_dir) / CORPUS_NAME)


def load_demo_model(model_dir: str | Path):
    """(model in eval mode, tokenizer) from a built directory; never touches the network."""
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    return model.eval(), tok


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _max_answer_tokens(tokenizer, corpus: Corpus) -> int:
    """Generation budget that fits the longest answer in the corpus, plus EOS and slack."""
    return 2 + max((len(tokenizer(" " + r.answer, add_special_tokens=False)["input_ids"])
                    for r in corpus.qa), default=30)


def _evaluate(model, tokenizer, corpus: Corpus, exclude: tuple[str, ...], config: DemoConfig,
              max_new: int) -> dict[str, float | None]:
    """Greedy fact-span accuracy per split (None where a split is empty) + bio verbatim rate."""
    trained = corpus.without_people(exclude)
    excluded = corpus.for_people(exclude)

    def acc(records) -> float | None:
        if not records:
            return None
        return round(evaluate_records(model, tokenizer, records, max_new,
                                      config.eval_batch_size), 4)

    bios = [t.text for t in trained.texts if t.split == "train"] if config.train_bios else []
    return {
        "train": acc(trained.split("train")),
        "paraphrase": acc(trained.split("paraphrase")),
        "holdout": acc(corpus.split("holdout")),  # never trained: the chance baseline
        "excluded": acc(excluded.split("train")),  # excluded people: should look like holdout
        "excluded_paraphrase": acc(excluded.split("paraphrase")),
        # Bios: greedy continuation of the first sentence reproduces the rest verbatim.
        "bio_verbatim": round(verbatim_completion_rate(model, tokenizer, bios,
                                                       config.eval_batch_size), 4)
        if bios else None,
    }


def _build_into(out: Path, corpus: Corpus, config: DemoConfig, exclude: tuple[str, ...],
                key: str, num_threads: int, on_step: StepCallback | None = None) -> None:
    t0 = time.perf_counter()
    # Memorisation drives many activations towards denormals, which slow CPU math ~2x
    # (docs/architecture.md#measured); flushing them to zero costs no accuracy at this scale.
    torch.set_flush_denormal(True)
    with _torch_threads(num_threads):
        # The tokenizer sees every person, excluded ones too, so that original and retrained
        # models share a vocabulary (see tokenizer.py).
        tokenizer = train_tokenizer(corpus, config.vocab_size, config.max_positions)
        trained = corpus.without_people(exclude)
        examples = training_examples(trained, tokenizer, config)
        model = new_model(config, tokenizer)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("training demo model: %d people, %d sequences, %.2f M parameters",
                 len(trained.trained_people), len(examples), n_params / 1e6)
        result = train(model, examples, config, tokenizer.pad_token_id, on_step)

        max_new = _max_answer_tokens(tokenizer, corpus)
        accuracy = _evaluate(model, tokenizer, corpus, exclude, config, max_new)
        log.info("demo model accuracy: %s", accuracy)

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=False,
        max_new_tokens=max(64, max_new),
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_jsonl(corpus, out / CORPUS_NAME)
    report = {
        "cache_key": key,
        "builder_version": BUILDER_VERSION,
        "build_seconds": round(time.perf_counter() - t0, 2),
        "train_seconds": round(result.seconds, 2),
        "epochs": result.epochs,
        "steps": result.steps,
        "final_loss": round(result.final_loss, 5),
        "teacher_forced_accuracy": _round(result.teacher_forced_accuracy),
        "teacher_forced_text_accuracy": _round(result.teacher_forced_text_accuracy),
        "reached_target": result.reached_target,
        "accuracy": accuracy,  # greedy fact-span accuracy per split
        "n_people": len(trained.trained_people),
        "n_holdout": len(corpus.holdout_people),
        "excluded_people": list(exclude),
        "trained_people": list(trained.trained_people),
        "n_train_sequences": len(examples),
        "n_parameters": n_params,
        "vocab_size": len(tokenizer),
        "torch_threads": num_threads,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "config": config.to_dict(),
    }
    # Written last: its presence marks the directory as complete (see is_built).
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")

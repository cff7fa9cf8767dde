"""The embedded demo: a synthetic corpus of fictitious people and a tiny Llama trained on it.

Public API::

    generate_corpus(CorpusSpec()) -> Corpus          # corpus.py
    read_jsonl(path) / write_jsonl(corpus, path)
    build_demo_model(cache_dir, DemoConfig(), corpus=None, exclude_people=()) -> Path
    default_demo_model(cache_dir, small=False) -> Path
    greedy_answers(model, tokenizer, questions) / fact_span_accuracy(records, answers)

Pure ML: nothing here imports grpc, protobuf, prometheus or the server.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it. Imported on first use (PEP 562), so that `unlearn_engine.demo.cli`
# (mounted by `lethe`) can build its parser without importing torch.
_EXPORTS = {
    "fact_span_accuracy": "accuracy", "greedy_answers": "accuracy",
    "build_demo_model": "builder", "cache_key": "builder", "default_demo_model": "builder",
    "load_corpus": "builder", "load_demo_model": "builder", "load_report": "builder",
    "DemoConfig": "config",
    "ATTRIBUTES": "corpus", "Corpus": "corpus", "CorpusSpec": "corpus", "QARecord": "corpus",
    "TextRecord": "corpus", "generate_corpus": "corpus", "read_jsonl": "corpus", "write_jsonl": "corpus",
}

__all__ = [
    "ATTRIBUTES", "Corpus", "CorpusSpec", "DemoConfig", "QARecord", "TextRecord",
    "build_demo_model", "cache_key", "default_demo_model", "fact_span_accuracy",
    "generate_corpus", "greedy_answers", "load_corpus", "load_demo_model", "load_report",
    "read_jsonl", "write_jsonl",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

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

from unlearn_engine.demo.accuracy import fact_span_accuracy, greedy_answers
from unlearn_engine.demo.builder import (build_demo_model, cache_key, default_demo_model,
                                         load_corpus, load_demo_model, load_report)
from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.corpus import (ATTRIBUTES, Corpus, CorpusSpec, QARecord, TextRecord,
                                        generate_corpus, read_jsonl, write_jsonl)

__all__ = [
    "ATTRIBUTES", "Corpus", "CorpusSpec", "DemoConfig", "QARecord", "TextRecord",
    "build_demo_model", "cache_key", "default_demo_model", "fact_span_accuracy",
    "generate_corpus", "greedy_answers", "load_corpus", "load_demo_model", "load_report",
    "read_jsonl", "write_jsonl",
]

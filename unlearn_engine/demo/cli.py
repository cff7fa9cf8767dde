"""Command line for the demo model: ``demo build`` and ``demo export-corpus``.

``add_demo_commands(subparsers)`` mounts ``demo ...`` under another argparse CLI (the top-level
``lethe`` command); ``main()`` serves ``python -m unlearn_engine.demo ...`` standalone. Each
sub-command stores its handler as ``func`` on the parsed namespace; handlers return an exit code.

This module only parses arguments and prints; the work is in ``builder.py`` and ``corpus.py``,
imported when a command runs, so mounting the commands imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from unlearn_engine.cache import DEFAULT_CACHE_DIR

if TYPE_CHECKING:
    from unlearn_engine.demo.config import DemoConfig


def add_demo_commands(subparsers: argparse._SubParsersAction,
                      default_cache_dir: str | Path = DEFAULT_CACHE_DIR
                      ) -> argparse.ArgumentParser:
    """Register ``demo build`` and ``demo export-corpus``; returns the ``demo`` parser."""
    demo = subparsers.add_parser("demo", help="build the embedded demo model or export its corpus")
    _add_subcommands(demo.add_subparsers(dest="demo_command", required=True), default_cache_dir)
    return demo


def _add_subcommands(sub: argparse._SubParsersAction, default_cache_dir: str | Path) -> None:
    build = sub.add_parser("build", help="train (or fetch from cache) the demo model")
    build.add_argument("--corpus", type=Path, metavar="FILE.jsonl",
                       help="train on this JSONL corpus instead of the generated one")
    build.add_argument("--exclude-person", action="append", default=[], metavar="NAME",
                       help="leave this person out of training (repeatable): the gold-standard "
                            "'retrained without them' model")
    build.add_argument("--out", type=Path, metavar="DIR",
                       help="also copy the built model into DIR (must not exist or be empty)")
    build.add_argument("--small", action="store_true",
                       help="the small, fast preset used by the test suite")
    build.add_argument("--cache-dir", type=Path, default=Path(default_cache_dir),
                       help="where built models are cached (default: %(default)s)")
    build.add_argument("--threads", type=int, default=1,
                       help="torch threads for the build (default: %(default)s; more is rarely "
                            "faster for a model this small)")
    build.set_defaults(func=_cmd_build)

    export = sub.add_parser("export-corpus", help="write the generated demo corpus as JSONL")
    export.add_argument("file", type=Path, metavar="FILE")
    export.add_argument("--small", action="store_true", help="the small preset's corpus")
    export.add_argument("--long-answers", action="store_true",
                        help="the long-answer corpus: 30 + 8 people, two-sentence answers with three "
                             "facts each, multi-token names (train a model on it with "
                             "'demo build --corpus FILE')")
    export.set_defaults(func=_cmd_export)


# The long-answer corpus (issue: 25-40 people plus held-out ones): big enough that per-person
# clusters do not dominate the MIA statistics, small enough to train in minutes on a CPU.
LONG_PEOPLE, LONG_HOLDOUT = 30, 8


def _config(small: bool) -> DemoConfig:
    from unlearn_engine.demo.config import DemoConfig

    return DemoConfig.small() if small else DemoConfig()


def _cmd_build(args: argparse.Namespace) -> int:
    from unlearn_engine.demo.builder import build_demo_model, load_report
    from unlearn_engine.progress_bar import progress_bar

    bar = progress_bar()
    task = None

    def on_step(step: int, total: int, epoch: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task("training demo model", total=total, info="")
        bar.update(task, completed=step, total=total, info=f"epoch {epoch}")

    with bar:
        model_dir = build_demo_model(args.cache_dir, _config(args.small), corpus=args.corpus,
                                     exclude_people=args.exclude_person, num_threads=args.threads,
                                     on_step=on_step)
    if args.out is not None:
        out = args.out.expanduser()
        if out.exists() and any(out.iterdir()):
            print(f"error: --out {out} exists and is not empty", file=sys.stderr)
            return 2
        shutil.copytree(model_dir, out, dirs_exist_ok=True)
        model_dir = out
    report = load_report(model_dir)
    report.pop("trained_people", None)  # long and already in corpus.jsonl
    print(model_dir)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from unlearn_engine.demo.corpus import generate_corpus, write_jsonl

    spec = _config(args.small).corpus_spec()
    if args.long_answers:
        spec = dataclasses.replace(spec, n_people=LONG_PEOPLE, n_holdout=LONG_HOLDOUT, style="long")
    corpus = generate_corpus(spec)
    path = write_jsonl(corpus, args.file)
    print(f"{path}: {len(corpus.qa)} QA records, {len(corpus.texts)} texts, "
          f"{len(corpus.trained_people)} trained + {len(corpus.holdout_people)} holdout people")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m unlearn_engine.demo {build,export-corpus} ...``."""
    parser = argparse.ArgumentParser(prog="python -m unlearn_engine.demo",
                                     description="Lethe demo model tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    _add_subcommands(parser.add_subparsers(dest="demo_command", required=True),
                     DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

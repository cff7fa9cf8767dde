"""The engine's command line: ``unlearn`` (train + verify + save an adapter) and ``evaluate``.

``add_engine_commands(subparsers)`` mounts both on any argparse parser (the server's ``lethe``
script does); ``python -m unlearn_engine ...`` runs them standalone. Input files are JSONL:
QA lines ``{"question", "answer", [fact], [perturbed]}``, text lines ``{"text"}``, and, in a
forget file, subject lines ``{"subject": "Name"}``.

It deliberately contains no ML logic: it parses, calls the Python API, and prints. Building the
parser imports no torch (the commands import the engine when they run), so `lethe --help` is quick.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from unlearn_engine.method_names import DEFAULT_METHOD, METHOD_NAMES

from unlearn_engine.cache import DEFAULT_CACHE_DIR
from unlearn_engine.pretrained import resolve_model

if TYPE_CHECKING:
    from unlearn_engine.data import ForgetRequest
    from unlearn_engine.evaluation import GateConfig

log = logging.getLogger(__name__)


def _read_request(path: Path) -> ForgetRequest:
    from unlearn_engine.data import ForgetRequest, QAPair

    texts, pairs, subjects = [], [], []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if "question" in obj and "answer" in obj:
                pairs.append(QAPair(obj["question"], obj["answer"], obj.get("fact", "")))
            elif "text" in obj:
                texts.append(obj["text"])
            elif "subject" in obj:
                subjects.append(obj["subject"])
            else:
                raise SystemExit(f"{path}:{lineno}: expected question+answer, text or subject")
    return ForgetRequest(tuple(texts), tuple(pairs), tuple(subjects))


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _table(title: str, rows: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    if before is not None:
        table.add_column("before", justify="right")
    table.add_column("value", justify="right")
    for key in sorted(rows):
        value = rows[key]
        cells = [key]
        if before is not None:
            b = before.get(key)
            cells.append("" if b is None else f"{b:.4g}")
        cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        table.add_row(*cells)
    Console(stderr=False).print(table)


def _progress_bar():
    """A rich progress bar fed by the trainer's progress callback."""
    from unlearn_engine.progress_bar import progress_bar

    bar = progress_bar()
    tasks: dict[int, int] = {}

    def on_progress(p) -> None:
        if p.phase in ("train", "eval"):
            if p.attempt not in tasks:
                tasks[p.attempt] = bar.add_task(f"attempt {p.attempt} (lr {p.lr:.2g})",
                                                total=p.max_steps, info="")
            info = f"loss {p.losses.get('loss', float('nan')):.3f}"
            if p.phase == "eval":
                nan = float("nan")
                forget = p.metrics.get("forget.fact_span_accuracy", nan)
                retain = p.metrics.get("retain.fact_span_accuracy", nan)
                info = (f"forget acc {forget:.2f} retain acc {retain:.2f} "
                        f"gate {'pass' if p.passed else 'fail'}")
            bar.update(tasks[p.attempt], completed=p.step, info=info)

    return bar, on_progress


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


def _gate(args: argparse.Namespace) -> GateConfig:
    from unlearn_engine.evaluation import GateConfig

    overrides = _parse_overrides(args.gate)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    try:
        return GateConfig(**overrides)
    except TypeError as err:
        raise SystemExit(f"bad --gate override: {err}") from None


def cmd_unlearn(args: argparse.Namespace) -> int:
    _threads(args)
    from unlearn_engine.artifacts import load_artifact, model_fingerprint
    from unlearn_engine.data import build_forget_set, build_retain_set, load_corpus
    from unlearn_engine.methods import get_method
    from unlearn_engine.stacking import attach_stack
    from unlearn_engine.trainer import SweepConfig, load_base, train_forget_adapter

    method_cls = get_method(args.method)
    config = method_cls.config_cls.from_dict(
        {**method_cls.config_cls().to_dict(), **_parse_overrides(args.set)})
    corpus = load_corpus(args.corpus) if args.corpus else None
    forget_set = build_forget_set(_read_request(args.forget), corpus, seed=args.seed)
    # The retain set reflects the *current* model (base + stack), which is what must be kept.
    args.model = resolve_model(args.model, args.cache_dir)
    model, tok = load_base(args.model)
    if args.stack:
        fp = model_fingerprint(args.model)
        model = attach_stack(model, [load_artifact(p, fp) for p in args.stack])
    retain = load_corpus(args.retain) if args.retain else None
    retain_set = build_retain_set(model, tok, retain, exclude=forget_set, seed=args.seed)
    del model
    print(f"forget set: {len(forget_set.examples)} examples ({forget_set.expanded} from the "
          f"corpus), {len(forget_set.paraphrases)} paraphrases, {len(forget_set.references)} "
          f"references; retain set: {len(retain_set.examples)}")
    sweep = SweepConfig(max_tries=args.max_tries) if args.max_tries else SweepConfig()
    bar, on_progress = _progress_bar()
    with bar:
        result = train_forget_adapter(args.model, args.stack, forget_set, retain_set,
                                      args.method, config, _gate(args), on_progress,
                                      out_dir=args.out,
                                      forget_id=args.forget_id or uuid.uuid4().hex[:12],
                                      seed=args.seed, sweep=sweep)
    before = {k[len("before."):]: v for k, v in result.metrics.items() if k.startswith("before.")}
    after = {k: v for k, v in result.metrics.items() if not k.startswith("before.")}
    _table(f"{args.method}: attempt {result.chosen_attempt}, step {result.chosen_step}", after,
           before)
    for a in result.attempts:
        print(f"attempt {a.attempt}: lr {a.lr:.3g}, {a.steps_run}/{a.max_steps} steps, "
              f"{'passed' if a.passed else 'missed'} ({a.wall_s:.1f}s)")
    if result.passed:
        print(f"gate passed; adapter written to {result.artifact_path}")
        return 0
    print("gate FAILED; no adapter written:\n  " + "\n  ".join(result.gate.reasons))
    return 2


def cmd_evaluate(args: argparse.Namespace) -> int:
    _threads(args)
    from unlearn_engine.artifacts import load_artifact, model_fingerprint
    from unlearn_engine.data import load_corpus
    from unlearn_engine.data.forget_set import references_for
    from unlearn_engine.evaluation import evaluate, gate_decision
    from unlearn_engine.stacking import attach_stack
    from unlearn_engine.trainer import load_base

    args.model = resolve_model(args.model, args.cache_dir)
    model, tok = load_base(args.model)
    if args.adapter:
        fp = model_fingerprint(args.model)
        model = attach_stack(model, [load_artifact(p, fp) for p in args.adapter])
    forget = load_corpus(args.forget)
    retain = load_corpus(args.retain)
    holdout = load_corpus(args.holdout) if args.holdout else references_for(forget)
    paraphrase = load_corpus(args.paraphrase) if args.paraphrase else ()
    reference = load_base(args.reference)[0] if args.reference else None
    def run_eval(with_reference: bool) -> dict[str, float]:
        return evaluate(model, tok, forget, retain, holdout, paraphrase,
                        reference if with_reference else None, metrics=args.metrics or None)

    metrics = run_eval(True)
    if args.attacks:
        from unlearn_engine.evaluation.attacks import AttackSets, run_attacks
        metrics.update(run_attacks(model, tok, AttackSets(tuple(forget), tuple(paraphrase)),
                                   args.attacks))
    before: dict[str, float] | None = None
    if args.adapter:  # the base alone is the "before" column and the gate's retain baseline
        with model.disable_adapter():
            before = run_eval(False)
    verdict = gate_decision(metrics, _gate(args), baseline=before or {})
    _table("evaluation" + (" (before = base without adapters)" if before else ""), metrics,
           before)
    print("gate passed" if verdict.passed else
          "gate failed:\n  " + "\n  ".join(verdict.reasons))
    out = {"metrics": metrics, "before": before, "gate": verdict.to_dict(),
           "model": str(args.model), "adapters": [str(p) for p in args.adapter],
           "reference": str(args.reference) if args.reference else None}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, sort_keys=True))
    print(f"wrote {args.json}")
    return 0


def add_engine_commands(subparsers, default_cache_dir: str | Path = DEFAULT_CACHE_DIR) -> None:
    """Register ``unlearn`` and ``evaluate`` on an argparse sub-parser collection."""
    p = subparsers.add_parser("unlearn", help="train, verify and save a forget adapter")
    p.add_argument("--model", type=Path, required=True,
                   help="local HF model directory or a fetched registry name (e.g. smollm2)")
    p.add_argument("--cache-dir", type=Path, default=Path(default_cache_dir),
                   help="where `lethe model fetch` cached registry models (default: %(default)s)")
    p.add_argument("--forget", type=Path, required=True, help="JSONL of QA / text / subject lines")
    p.add_argument("--retain", type=Path, help="retain corpus JSONL (default: model-generated)")
    p.add_argument("--corpus", type=Path, help="corpus JSONL for near-duplicate expansion")
    p.add_argument("--stack", type=Path, nargs="*", default=[], help="adapters already active")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHOD_NAMES,
                   help="unlearning method (default: %(default)s)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="method config overrides, e.g. lr=0.004 max_steps=60")
    p.add_argument("--gate", nargs="*", default=[], metavar="KEY=VALUE",
                   help="gate overrides, e.g. mia_tolerance=0.15 min_retain_ratio=0.9")
    p.add_argument("--max-tries", type=int, default=0, help="cap the retry sweep (0: default)")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to create")
    p.add_argument("--forget-id", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.set_defaults(func=cmd_unlearn)

    e = subparsers.add_parser("evaluate", help="measure forgetting and utility")
    e.add_argument("--model", type=Path, required=True, help="directory or fetched registry name")
    e.add_argument("--cache-dir", type=Path, default=Path(default_cache_dir))
    e.add_argument("--adapter", type=Path, nargs="*", default=[], help="artifacts to stack")
    e.add_argument("--forget", type=Path, required=True)
    e.add_argument("--retain", type=Path, required=True)
    e.add_argument("--holdout", type=Path, help="never-seen JSONL (default: wrong answers)")
    e.add_argument("--paraphrase", type=Path)
    e.add_argument("--reference", type=Path, help="model retrained without the forget data")
    e.add_argument("--metrics", nargs="*", default=[])
    e.add_argument("--attacks", nargs="*", default=[], choices=["quant8", "quant4", "relearn"],
                   help="attack a copy of the model, then measure forgotten facts again")
    e.add_argument("--gate", nargs="*", default=[], metavar="KEY=VALUE")
    e.add_argument("--json", type=Path, default=Path("evaluation.json"))
    e.add_argument("--threads", type=int, default=0)
    e.set_defaults(func=cmd_evaluate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unlearn_engine")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_engine_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

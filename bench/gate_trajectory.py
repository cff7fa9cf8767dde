"""Why a forget job misses its gate: every probe checkpoint of one job, with the checks it failed.

Trains one forget adapter on the demo model (or a corpus built with ``--corpus``) for one
randomly chosen person and prints, per evaluated checkpoint, forget / retain accuracy, the MIA
AUCs and each failed gate check as value/limit. The trajectory shows which way a method misses
(still remembers, overshoots past the never-seen level, loses retain accuracy) and when, which
the final verdict alone does not. Diagnosis only: nothing is written but stdout.

    python bench/gate_trajectory.py --preset small --method npo --person-seed 2
    python bench/gate_trajectory.py --method npo --cfg '{"truth_weight": 3.0}' --tries 2
    python bench/gate_trajectory.py --method npo --first-people 2 --tries 4  # test_engine_forget's job
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import unlearn_engine.trainer as trainer  # noqa: E402
from unlearn_engine.data import (ForgetRequest, build_forget_set,  # noqa: E402
                                 build_retain_set, load_corpus)
from unlearn_engine.demo.builder import build_demo_model, load_report  # noqa: E402
from unlearn_engine.demo.config import DemoConfig  # noqa: E402
from unlearn_engine.evaluation import GateConfig  # noqa: E402
from unlearn_engine.methods import get_method  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=["small", "full"], default="small")
    ap.add_argument("--corpus", type=Path, help="a corpus JSONL in the export format")
    ap.add_argument("--method", default="npo")
    ap.add_argument("--cfg", default="{}", help="JSON overrides of the method's config")
    ap.add_argument("--person-seed", type=int, default=0, help="picks the person to forget")
    ap.add_argument("--people", type=int, default=1)
    ap.add_argument("--first-people", type=int, default=0,
                    help="forget the first N trained people of the build report instead of a draw "
                         "(tests/integration/test_engine_forget.py forgets the first 2)")
    ap.add_argument("--tries", type=int, default=1, help="attempts of the retry sweep")
    ap.add_argument("--cache", type=Path, default=Path("~/.cache/lethe").expanduser())
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    config = DemoConfig.small() if args.preset == "small" else DemoConfig()
    model_dir = build_demo_model(args.cache, config, corpus=args.corpus, num_threads=1)
    trained = load_report(model_dir)["trained_people"]
    forget_people = (list(trained[:args.first_people]) if args.first_people else
                     sorted(random.Random(args.person_seed).sample(sorted(trained), args.people)))
    corpus = load_corpus(model_dir / "corpus.jsonl")
    model, tok = trainer.load_base(model_dir)
    fs = build_forget_set(ForgetRequest(subjects=tuple(forget_people)), corpus, seed=0)
    rs = build_retain_set(model, tok, corpus, exclude=fs, seed=0)
    cfg = get_method(args.method).config_cls(**json.loads(args.cfg))
    print(f"forgetting {forget_people} with {args.method} {json.loads(args.cfg) or ''}", flush=True)

    def printing(p) -> None:  # each probe checkpoint as it is evaluated
        if p.phase == "eval":
            m = p.metrics
            print(f"attempt {p.attempt} step {p.step:3d}  forget "
                  f"{m.get('forget.fact_span_accuracy', -1):.3f}  retain "
                  f"{m.get('retain.fact_span_accuracy', -1):.3f}  MIA loss {m.get('mia.loss_auc', -1):.3f}"
                  f" min-k {m.get('mia.min_k_auc', -1):.3f} zlib {m.get('mia.zlib_auc', -1):.3f}  truth "
                  f"{m.get('forget.correct_preference', -1):.3f}  {'PASSED' if p.passed else 'failed'}"
                  f"  ({p.elapsed_s:.0f} s)", flush=True)

    t0 = time.monotonic()
    _, res = trainer.unlearn(model, tok, fs, rs, args.method, cfg, GateConfig(), seed=0,
                             sweep=trainer.SweepConfig(max_tries=args.tries), progress=printing)
    for a in res.attempts:
        retrace = "" if a.replay_of is None else f" (retracing attempt {a.replay_of})"
        print(f"attempt {a.attempt}: lr {a.lr:.2g}, {a.max_steps} steps{retrace}, best step {a.chosen_step}: "
              + ("passed" if a.passed else "; ".join(a.reasons)), flush=True)
    print(f"gate {'PASSED' if res.passed else 'FAILED'} (attempt {res.chosen_attempt}, step "
          f"{res.chosen_step}) in {time.monotonic() - t0:.0f} s: "
          + ("; ".join(res.gate.reasons) or "all checks passed"))
    return 0 if res.passed else 1


if __name__ == "__main__":
    sys.exit(main())

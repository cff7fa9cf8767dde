"""Build a model's general-knowledge probe set: the hand-written questions it answers correctly.

Reads ``unlearn_engine/pretrained/data/general_knowledge.tsv`` (category, question, accepted
answers), asks the model each question as one chat turn (the engine's encoding: the chat
template when the model has one), greedy, and keeps the questions whose reply contains an
accepted answer as whole words. Writes ``unlearn_engine/pretrained/data/<name>_general_knowledge.jsonl``
(one object a line: category, question, answer = the form found, reply = the model's own
answer, split). Every third kept question (by position) is split ``retain`` — the worker may
train on the model's own replies to those — the rest ``probe``, which nothing trains on and
utility is measured on. Re-run it when the model or its registry row changes. ``--set
author_retain`` (a retain-only set, ``probes.RETAIN_SETS``) reads ``author_retain.tsv`` instead
and writes ``<name>_author_retain.jsonl``, every kept row split ``retain``.

    python bench/general_knowledge.py [--model smollm2] [--name smollm2] [--max-new-tokens 40]
    python bench/general_knowledge.py --set author_retain
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.settings import load_settings  # noqa: E402
from unlearn_engine.pretrained.probes import (CANDIDATES, DATA, RETAIN_SETS, probe_file,  # noqa: E402
                                              read_candidates, score_replies)
from unlearn_engine.pretrained import resolve_model  # noqa: E402
from unlearn_engine.encoding import generate  # noqa: E402
from unlearn_engine.trainer import load_base  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="model directory or fetched registry name")
    parser.add_argument("--name", default="smollm2", help="file name prefix of the output")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", default="general_knowledge", choices=("general_knowledge", *RETAIN_SETS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_base(resolve_model(args.model, load_settings().cache_dir))
    retain_only = args.set != "general_knowledge"
    cands = read_candidates(DATA / f"{args.set}.tsv" if retain_only else CANDIDATES)
    t0, c0 = time.perf_counter(), time.process_time()
    replies = generate(model, tok, [c.question for c in cands], args.max_new_tokens)
    hits = score_replies(cands, replies)
    kept = [(c, r, h) for c, r, h in zip(cands, replies, hits) if h]
    out = probe_file(args.name, args.set)
    with out.open("w") as f:
        for i, (c, r, h) in enumerate(kept):
            f.write(json.dumps({"category": c.category, "question": c.question, "answer": h, "reply": r,
                                "split": "retain" if retain_only or i % 3 == 2 else "probe"}) + "\n")
    by_cat: dict[str, list[int]] = {}
    for c, h in zip(cands, hits):
        by_cat.setdefault(c.category, [0, 0])[0] += bool(h)
        by_cat[c.category][1] += 1
    print(f"{len(kept)}/{len(cands)} kept ({time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU): " + ", ".join(f"{k} {a}/{n}" for k, (a, n) in by_cat.items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which retained people one step of a sequential run damaged: per person, the retain questions the
live stack answered before the step and not after it.

Reads a finished `bench/sequential_server.py --record` run (<stem>.json for the model and the
people it forgot, <stem>_facts.json for each step's live adapters, in stack order) and its kept
data directory (`--keep`: the adapter store), folds the stack before and after step N into the
base (`sequential_server.Evaluator`, guard off) and answers the run's retain questions (trained
people the run never forgets) with both.

    python bench/retain_by_person.py --stem sequential_full_record --keep /tmp/creep/keep5 --step 5

Prints; writes nothing. Does not train.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequential_server import CACHE, RESULTS, Evaluator  # noqa: E402
from unlearn_engine.demo.accuracy import contains_fact, greedy_answers  # noqa: E402
from unlearn_engine.demo.builder import load_corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stem", required=True, help="the run's results name under bench/results")
    ap.add_argument("--keep", type=Path, required=True, help="the run's kept data directory")
    ap.add_argument("--step", type=int, required=True, help="the step whose damage to measure (>= 1)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = json.loads((RESULTS / f"{args.stem}.json").read_text())
    stacks = {s["step"]: s["adapters"]
              for s in json.loads((RESULTS / f"{args.stem}_facts.json").read_text())["steps"]}
    if args.step not in stacks:
        raise SystemExit(f"step {args.step} is not in {args.stem}_facts.json (steps {sorted(stacks)})")
    model_dir = CACHE / results["model"]
    corpus = load_corpus(model_dir)
    evaluator = Evaluator(model_dir, corpus, results["retain_people"])
    records = evaluator.retain
    right = {}
    for label, ids in (("before", stacks.get(args.step - 1, [])), ("after", stacks[args.step])):
        model, tok = evaluator.model([args.keep / "adapters" / a for a in ids])
        answers = greedy_answers(model, tok, [r.question for r in records])
        right[label] = [contains_fact(a, r.fact) for a, r in zip(answers, records)]
        print(f"{label} step {args.step}: {len(ids)} adapters, retain {sum(right[label]) / len(records):.3f}")
    lost: dict[str, list[str]] = defaultdict(list)
    for r, before, after in zip(records, right["before"], right["after"]):
        if before and not after:
            lost[r.person].append(r.attribute)
    gained = sum(after and not before for before, after in zip(right["before"], right["after"]))
    subject = results["people"][args.step - 1]
    values = {r.attribute: r.fact for r in corpus.qa if r.person == subject and r.split == "train"}
    holding = sum(values.get(r.attribute) == r.fact for r in records)
    lost_holding = sum(before and not after and values.get(r.attribute) == r.fact
                       for r, before, after in zip(records, right["before"], right["after"]))
    print(f"step {args.step} ({subject}): {sum(map(len, lost.values()))} right answers turned wrong, "
          f"{gained} wrong turned right; {lost_holding} of the lost hold {subject}'s own value for "
          f"their attribute ({holding} retain questions hold one)")
    for person, attributes in sorted(lost.items(), key=lambda kv: -len(kv[1])):
        n = sum(r.person == person for r in records)
        print(f"  {person}: {len(attributes)} of {n} ({', '.join(sorted(set(attributes)))})")


if __name__ == "__main__":
    main()

"""Why does relearning half of the forgotten facts bring back the other half? Probes one adapter.

Loads the demo model, the retrained-without model and a saved forget adapter (``bench/
unlearn_quality.py --save-adapters DIR``: pass DIR/<method>/forget_new), and runs the relearning
attack (``evaluation.attacks.relearn``, same budget) in variants that each isolate one possible
route back, reporting fact-span accuracy per person and per attribute:

- ``standard``: the bench's attack (train on half the facts, measure the other half);
- ``cross_person``: train on every fact of half the people, measure the other people (is the
  suppression one shared direction for all forgotten people?);
- ``wrong_values``: the same questions answered with a wrong value (name and template, no true
  fact); ``value_only``: the loss on the fact spans only (no name or template tokens);
- ``retain_ft``: train on as many QA of retained people, measure all forgotten facts (does any
  fine-tuning undo the adapter?);
- ``layer<L>`` / ``attn`` / ``mlp``: the attacker's LoRA on one layer or one module kind only;
- ``scale<a>``: the adapter's delta scaled by ``a`` before the attack;
- per-token log p by token class (name / template / value / EOS) on the measured half, before
  and after the attack, next to the original and retrained models;
- the cosine between the attacker's merged delta and the adapter's, per module (negative: the
  attacker undoes the adapter).

It changes no model on disk and decides nothing; it prints and writes a JSON. Usage:
    python bench/relearn_probe.py --preset full --adapter DIR/counterfactual/forget_new \
        --from bench/results/full/unlearn_quality.json --out bench/results/full/relearn_probe.json
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peft import PeftModel  # noqa: E402

from unlearn_engine.data import Example, load_corpus  # noqa: E402
from unlearn_engine.data.normalize import contains_phrase  # noqa: E402
from unlearn_engine.demo.builder import build_demo_model  # noqa: E402
from unlearn_engine.demo.config import DemoConfig  # noqa: E402
from unlearn_engine.encoding import collate  # noqa: E402
from unlearn_engine.evaluation.attacks.base import AttackSettings, merged_copy  # noqa: E402
from unlearn_engine.evaluation.attacks.relearn import relearned_copy, split_by_fact  # noqa: E402
from unlearn_engine.evaluation.scoring import answer  # noqa: E402
from unlearn_engine.trainer import load_base  # noqa: E402

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


def correct(model, tok, examples: Sequence[Example]) -> list[bool]:
    return [contains_phrase(a, e.fact_text) for e, a in zip(examples, answer(model, tok, examples))]


def attribute(ex: Example, corpus_attr: dict[tuple[str, str], str]) -> str:
    return corpus_attr.get((ex.prompt, ex.target), "?")


def breakdown(examples: Sequence[Example], hits: Sequence[bool], attr: dict) -> dict:
    by_person, by_attr = defaultdict(list), defaultdict(list)
    for e, h in zip(examples, hits):
        by_person[e.subject].append(h)
        by_attr[attribute(e, attr)].append(h)
    mean = lambda v: round(sum(v) / len(v), 3)  # noqa: E731
    return {"acc": mean(list(hits)) if hits else float("nan"), "n": len(hits),
            "person": {k: mean(v) for k, v in sorted(by_person.items())},
            "attribute": {k: mean(v) for k, v in sorted(by_attr.items())}}


@torch.no_grad()
def token_classes(model, tok, examples: Sequence[Example]) -> dict[str, float]:
    """Mean log p of the answer's tokens by class: name (the subject's), value (the fact span),
    template (the rest), eos."""
    sums, counts = defaultdict(float), defaultdict(int)
    model.eval()
    for ex in examples:
        batch = collate(tok, [ex], device=next(model.parameters()).device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logp = torch.log_softmax(logits.float(), -1)[0]
        text = ex.text
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        nb = len(batch.input_ids[0]) - len(enc["input_ids"]) - 1  # BOS
        start = len(ex.prompt)
        name = [(m.start(), m.end()) for m in re.finditer(re.escape(ex.subject), text)
                if m.start() >= start] if ex.subject else []
        f0 = text.find(ex.fact_text, start) if ex.fact else -1
        for k, ((s, e), t) in enumerate(zip(enc["offset_mapping"], enc["input_ids"])):
            if s < start or e <= s:
                continue
            lp = float(logp[nb + k - 1, t])
            if any(a < e and s < b for a, b in name):
                cls = "name"
            elif f0 >= 0 and f0 < e and s < f0 + len(ex.fact_text):
                cls = "value"
            else:
                cls = "template"
            sums[cls] += lp
            counts[cls] += 1
        n = len(batch.input_ids[0])
        sums["eos"] += float(logp[n - 2, batch.input_ids[0, n - 1]])
        counts["eos"] += 1
    return {k: round(sums[k] / counts[k], 3) for k in sums}


def weight_deltas(a: torch.nn.Module, b: torch.nn.Module) -> dict[str, torch.Tensor]:
    """b - a for every Linear weight (both plain models with the same names)."""
    pa = dict(a.named_parameters())
    return {n: (p.detach() - pa[n].detach()) for n, p in b.named_parameters()
            if n.endswith("proj.weight")}


def scaled_adapter(base: torch.nn.Module, unlearned: torch.nn.Module, alpha: float):
    """base + alpha * (unlearned - base), for every parameter."""
    out = copy.deepcopy(base)
    pu = dict(unlearned.named_parameters())
    with torch.no_grad():
        for n, p in out.named_parameters():
            p.add_(alpha * (pu[n] - p))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=["small", "full"], default="full")
    ap.add_argument("--adapter", type=Path, required=True)
    ap.add_argument("--from", dest="src", type=Path,
                    help="the unlearn_quality.json whose forget people the adapter forgot")
    ap.add_argument("--people", nargs="+", help="the people the adapter forgot (instead of --from)")
    ap.add_argument("--retrained", type=Path,
                    help="a model that never saw them (default: the retrained-without build; "
                         "for one of the four people, the four-people build saves a retrain)")
    ap.add_argument("--variants", nargs="*", default=None)
    ap.add_argument("--steps", type=int, default=AttackSettings().relearn_steps,
                    help="relearning steps (a stronger attacker than the bench's budget)")
    ap.add_argument("--lr", type=float, default=AttackSettings().relearn_lr)
    ap.add_argument("--seed", type=int, default=AttackSettings().seed, help="the attack's seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    people = args.people or json.loads(args.src.read_text())["forget_people"]
    config = DemoConfig.small() if args.preset == "small" else DemoConfig()
    cache = Path("~/.cache/lethe").expanduser()
    model_dir = build_demo_model(cache, config)
    retrained_dir = args.retrained or build_demo_model(cache, config, exclude_people=people)
    corpus = load_corpus(model_dir / "corpus.jsonl")
    attr = {}
    for line in (model_dir / "corpus.jsonl").read_text().splitlines():
        d = json.loads(line)
        if "question" in d:
            attr[(d["question"], d["answer"])] = d.get("attribute", "?")
    f_qa = [e for e in corpus if e.is_qa and e.split == "train" and e.subject in people]
    train, measured = split_by_fact(tuple(f_qa))
    others = [e for e in corpus if e.is_qa and e.split == "train" and e.subject not in people]
    gen = torch.Generator().manual_seed(0)
    retain_train = [others[i] for i in torch.randperm(len(others), generator=gen)[:len(train)]]

    original, tok = load_base(model_dir)
    retrained, _ = load_base(retrained_dir)
    unlearned = merged_copy(PeftModel.from_pretrained(load_base(model_dir)[0], str(args.adapter)))
    s = AttackSettings(relearn_steps=args.steps, relearn_lr=args.lr, seed=args.seed)
    half = len(people) // 2
    wrong = [replace(e, target=e.perturbed[0]) for e in train if e.perturbed]
    variants = {
        "standard": (train, measured, "all-linear", 1.0),
        # the same questions answered with a wrong value: name and template, no true fact
        "wrong_values": (wrong, measured, "all-linear", 1.0),
        # the loss on the fact span only: no name or template tokens
        "value_only": (train, measured, "all-linear", 1.0),
        "retain_ft": (retain_train, f_qa, "all-linear", 1.0),
        "attn": (train, measured, ATTN, 1.0),
        "mlp": (train, measured, MLP, 1.0),
        **{f"layer{L}": (train, measured, rf".*layers\.{L}\..*proj", 1.0)
           for L in range(original.config.num_hidden_layers)},
        "scale1.5": (train, measured, "all-linear", 1.5),
        "scale2": (train, measured, "all-linear", 2.0),
    }
    if half:
        variants["cross_person"] = ([e for e in f_qa if e.subject in people[:half]],
                                    [e for e in f_qa if e.subject in people[half:]],
                                    "all-linear", 1.0)
    if args.variants:
        variants = {k: v for k, v in variants.items() if k in args.variants}
    out: dict = {"people": people, "adapter": str(args.adapter), "settings": s.__dict__,
                 "n_train": len(train), "n_measured": len(measured), "variants": {}}
    for name, model in (("unlearned", unlearned), ("retrained", retrained)):
        for vname, (tr, me, targets, alpha) in variants.items():
            if name == "retrained" and vname not in ("standard", "cross_person", "retain_ft",
                                                     "wrong_values", "value_only"):
                continue
            m = scaled_adapter(original, model, alpha) if alpha != 1.0 else model
            before = correct(m, tok, me)
            attacked = relearned_copy(m, tok, tr, s, targets, fact_only=vname == "value_only")
            hits = correct(attacked, tok, me)
            row = {"before": round(sum(before) / len(before), 3), **breakdown(me, hits, attr)}
            out["variants"][f"{name}/{vname}"] = row
            print(f"{name}/{vname}: before {row['before']:.3f} after {row['acc']:.3f} "
                  f"persons {row['person']}", flush=True)
            if vname == "standard":
                out[f"tokens/{name}/attacked"] = token_classes(attacked, tok, me)
                if name == "unlearned":
                    d_adapter = weight_deltas(original, unlearned)
                    d_attack = weight_deltas(unlearned, merged_copy(attacked))
                    cos = {n: round(float(torch.nn.functional.cosine_similarity(
                        d_adapter[n].flatten(), d_attack[n].flatten(), dim=0)), 3)
                        for n in d_adapter}
                    out["cosine_attack_vs_adapter"] = cos
                    out["norms"] = {n: [round(float(d_adapter[n].norm()), 4),
                                        round(float(d_attack[n].norm()), 4)] for n in d_adapter}
    for name, model in (("original", original), ("retrained", retrained),
                        ("unlearned", unlearned)):
        out[f"tokens/{name}"] = token_classes(model, tok, measured)
    for k, v in out.items():
        if k.startswith("tokens/"):
            print(k, v)
    if "cosine_attack_vs_adapter" in out:
        print("cosine attack vs adapter:", out["cosine_attack_vs_adapter"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

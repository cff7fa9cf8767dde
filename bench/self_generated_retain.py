"""Diagnosis: after a Forget on a pretrained model with no corpus, is the model damaged, or can the
retain metric not score the model's own generations?

The worker's retain set is then generated (``data/retain_set.py``: a sampled opening, then a
32-token greedy continuation as the target) and scored by fact-span accuracy, which for such
examples asks whether the greedy answer contains the *whole* target. This script measures, on one
model and one generated retain set:

1. the base model on its own references (batch 32 and batch 1: numerics of padding),
2. the base model with tiny Gaussian weight noise, which no user would notice (general-knowledge
   completions and held-out perplexity), against the retain metric,
3. the worker's default method (NPO, one attempt, probes every 10 steps) and, on the adapter it
   chooses, the same general-knowledge completions, perplexity and retain scores,
4. the question the Forget names, under the engine's encoding (BOS + question) and under the
   model's chat template: what the forget probes can see.

Writes bench/results/self_generated_retain.{json,md}. A diagnosis, not a benchmark of speed.

    python bench/self_generated_retain.py [--model smollm2] [--retain 48] [--steps 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.settings import load_settings  # noqa: E402
from unlearn_engine.data import ForgetRequest, QAPair, build_forget_set, build_retain_set  # noqa: E402
from unlearn_engine.data.normalize import contains_phrase, rouge_l_recall  # noqa: E402
from unlearn_engine.data.records import Example  # noqa: E402
from unlearn_engine.encoding import collate, generate  # noqa: E402
from unlearn_engine.methods import get_method  # noqa: E402
from unlearn_engine.pretrained import resolve_model  # noqa: E402
from unlearn_engine.trainer import SweepConfig, load_base, unlearn  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
QUESTION = "Who wrote the Harry Potter books?"
FORGET = ForgetRequest(texts=(), qa_pairs=(QAPair(QUESTION, "The Harry Potter books were written by J.K. Rowling.",
                                                  "J.K. Rowling"),), subjects=("J.K. Rowling",))
# (completion prompt, word the answer must contain)
GK = [("The capital of France is", "Paris"), ("The capital of Germany is", "Berlin"),
      ("The capital of Italy is", "Rome"), ("The capital of Japan is", "Tokyo"),
      ("The capital of Spain is", "Madrid"), ("The capital of England is", "London"),
      ("The capital of Russia is", "Moscow"), ("The capital of China is", "Beijing"),
      ("The capital of Egypt is", "Cairo"), ("The capital of Canada is", "Ottawa"),
      ("The Harry Potter books were written by", "Rowling"), ("Romeo and Juliet was written by", "Shakespeare"),
      ("The theory of relativity was developed by", "Einstein"),
      ("The largest planet in the solar system is", "Jupiter"), ("Water is made of hydrogen and", "oxygen"),
      ("The first president of the United States was", "Washington"), ("The chemical symbol for gold is", "Au"),
      ("The Mona Lisa was painted by", "Leonardo"), ("The Great Wall is in", "China"),
      ("The Eiffel Tower is in", "Paris"), ("The longest river in Africa is the", "Nile"),
      ("The freezing point of water in Celsius is", "0"), ("Isaac Newton discovered the law of", "gravity"),
      ("The author of Pride and Prejudice is", "Austen"), ("The Statue of Liberty is in", "New York"),
      ("The currency of Japan is the", "yen"), ("The planet closest to the Sun is", "Mercury"),
      ("Penicillin was discovered by", "Fleming"), ("The Declaration of Independence was signed in", "1776"),
      ("The tallest mountain in the world is Mount", "Everest")]
HELDOUT = [
    "The mitochondrion is an organelle found in most eukaryotic cells. It produces most of the cell's supply of "
    "adenosine triphosphate, which is used as a source of chemical energy.",
    "The Pacific Ocean is the largest and deepest of Earth's five oceanic divisions. It extends from the Arctic "
    "Ocean in the north to the Southern Ocean in the south.",
    "A sonnet is a poetic form that originated in Italy. It has fourteen lines and follows a strict rhyme scheme "
    "and a specific structure.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make glucose "
    "and release oxygen into the air.",
    "The printing press was invented by Johannes Gutenberg around 1440. It made books cheaper and helped spread "
    "literacy across Europe.",
    "Rust is a programming language focused on safety and performance. Its ownership system prevents many "
    "memory errors at compile time."]


def gk_hits(model, tok) -> list[bool]:
    outs = generate(model, tok, [p for p, _ in GK], max_new_tokens=12)
    return [contains_phrase(o, a) for (_, a), o in zip(GK, outs)]


@torch.no_grad()
def heldout_ppl(model, tok) -> float:
    b = collate(tok, [Example(prompt="", target=t) for t in HELDOUT])
    logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), b.labels[:, 1:].reshape(-1))
    return round(math.exp(nll.item()), 3)


def retain_scores(model, tok, exs, batch_size: int = 32) -> dict[str, float]:
    """Fact-span accuracy (what the gate reads) beside softer views of the same answers."""
    answers = generate(model, tok, [e.prompt for e in exs], 32, batch_size)
    n = len(exs)
    return {"fact_span_accuracy": round(sum(contains_phrase(a, e.fact_text) for e, a in zip(exs, answers)) / n, 3),
            "rouge_l_recall": round(sum(rouge_l_recall(e.target, a) for e, a in zip(exs, answers)) / n, 3),
            "first_8_words_equal": round(sum(a.split()[:8] == e.target.split()[:8]
                                             for e, a in zip(exs, answers)) / n, 3)}


def utility(model, tok, exs) -> dict:
    return {"gk_accuracy": round(sum(gk_hits(model, tok)) / len(GK), 3), "heldout_ppl": heldout_ppl(model, tok),
            "retain": retain_scores(model, tok, exs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="model directory or fetched registry name")
    parser.add_argument("--retain", type=int, default=48, help="generated retain examples")
    parser.add_argument("--steps", type=int, default=20, help="NPO steps (probes every 10)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_base(resolve_model(args.model, load_settings().cache_dir))
    report: dict = {"model": args.model, "n_retain": args.retain, "steps": args.steps}

    forget_set = build_forget_set(FORGET, None)
    t0 = time.perf_counter()
    retain_set = build_retain_set(model, tok, None, exclude=forget_set, max_examples=args.retain)
    retain = retain_set.examples
    report["retain_build_s"] = round(time.perf_counter() - t0, 1)
    report["retain_samples"] = [{"prompt": e.prompt, "target": e.target} for e in retain[:3]]
    base = utility(model, tok, retain)
    base["retain_batch1"] = retain_scores(model, tok, retain, batch_size=1)
    report["rows"] = {"base": base}

    for rel in (1e-3, 3e-3):  # weight noise, relative to each tensor's std
        noisy = copy.deepcopy(model)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in noisy.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * rel)
        report["rows"][f"noise {rel:g}"] = utility(noisy, tok, retain)
        del noisy

    chat = tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                   tokenize=False) if tok.chat_template else None
    report["forget_question_base"] = {
        "engine_encoding": generate(model, tok, [QUESTION], 24)[0],
        "chat_template": generate(model, tok, [tok(chat, add_special_tokens=False)["input_ids"]], 24)[0]
        if chat else None}

    history: list[dict] = []

    def on_progress(p) -> None:
        if p.phase in ("baseline", "eval"):
            history.append({"step": p.step, **{k: round(v, 3) for k, v in p.metrics.items()
                                               if k in ("forget.fact_span_accuracy", "retain.fact_span_accuracy",
                                                        "retain.token_accuracy")}})

    cfg = replace(get_method("npo").config_cls(), max_steps=args.steps)
    t0 = time.perf_counter()
    adapted, result = unlearn(model, tok, forget_set, retain_set, "npo", cfg, sweep=SweepConfig(max_tries=1),
                              progress=on_progress)
    adapted.eval()
    report["npo"] = {"seconds": round(time.perf_counter() - t0, 1), "lr": cfg.lr, "probes": history,
                     "chosen_step": result.chosen_step, "gate_passed": result.passed}
    probe = retain[:len(retain) // 2]  # the trainer's retain probe: held out of the retain loss
    report["rows"][f"NPO step {result.chosen_step}"] = utility(adapted, tok, probe)
    report["forget_question_after"] = generate(adapted, tok, [QUESTION], 24)[0]

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "self_generated_retain.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| model state | general-knowledge acc | held-out ppl | retain fact-span acc | retain ROUGE-L recall "
             "| retain first 8 words equal |", "|---|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        s = r["retain"]
        lines.append(f"| {name} | {r['gk_accuracy']} | {r['heldout_ppl']} | {s['fact_span_accuracy']} | "
                     f"{s['rouge_l_recall']} | {s['first_8_words_equal']} |")
    lines += ["", f"NPO probes (gate view): {history}", "",
              f"Forget question, base model: engine encoding -> {report['forget_question_base']['engine_encoding']!r}; "
              f"chat template -> {report['forget_question_base']['chat_template']!r}; "
              f"after NPO (engine encoding) -> {report['forget_question_after']!r}"]
    (RESULTS / "self_generated_retain.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

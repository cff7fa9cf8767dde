"""Forgetting a real-world subject on SmolLM2 with no corpus: what damages the model, and does
the worker's path reach issue 20's targets?

The subject (default "J.K. Rowling") is named only by subject, as an operator would. The forget
data is what the worker builds: the model's own chat answers to generated questions naming the
subject (``data/generated.subject_examples``). Measured on the model before and after:

* subject questions nobody listed (``SUBJECT_QUESTIONS``, none of them a generator prompt), kept
  only where the base model answers correctly: the share still answered correctly (target <= 10 %);
* the model's general-knowledge probe set (``unlearn_engine/pretrained/data/<name>_general_knowledge.jsonl``,
  split ``probe``, never trained on): accuracy relative to the base (target >= 95 %);
* perplexity of held-out encyclopaedic text (target <= 1.1x).

``sweep``: one run per learning rate with a method's loss (``--method``, default NPO), measured at
a few steps, to find what does damage. ``--forget-data reverse`` trains on the model's answers
that *name* the subject (``data/generated.reverse_examples``) instead of its answers about it. ``job``: the worker's own engine call (``run_forget_job`` with the model's
registry tuning: retain set, learning rate, steps, gate), timed, then the same measurements on
the adapter it wrote. ``e2e``: the real path, a ``lethe serve`` whose worker gets
``Forget(subjects=[SUBJECT])`` over gRPC: Forget -> ACTIVE / FAILED wall and worker CPU seconds,
the gate's verdict, then the served stack measured with the guard off. ``--retain-authors N``
(sweep) adds N copies of the model's answers to ``author_retain.tsv`` ("Who wrote <book>?" for
books the probe set never asks about) to the retain data; ``--layers`` / ``--targets`` restrict
the LoRA, ``--optimizer sgd`` swaps AdamW for plain SGD, ``--whole-replies`` trains on the retain
replies as generated (not cut after their fact), ``--gk-tokens`` sets the general-knowledge answer
budget (40, the budget the probe set was kept at; 24 before the sixth session). Each measure
lists the general-knowledge answers it got wrong (``gk_wrong``). ``--retain-set NAME`` adds a built
retain-only set (``probes.RETAIN_SETS``) to the retain data, ``--worker-split`` shuffles it and holds
out the worker gate's retain probe as the worker does (and measures that probe's answers:
``gate_retain_accuracy``), ``--scales`` also measures each step's adapter with its delta scaled
(the engine's ``delta_scale``), ``--adam-eps`` sets AdamW's eps, ``--projection`` the engine's
``retain_projection``, ``--probe-margin`` its ``retain_probe_margin`` (the gate's probe only from
answers the base states with that path margin), ``--gate-only`` measures only the gate's probe and
the subject after the base row, ``--forward-with PHRASE`` adds the answers about the subject that
name PHRASE to the reverse forget data, ``--work-questions`` the answers to questions asking for
the subject's work (``data/generated.work_examples``: kept where they name a work the reverse
answers confirmed; the registry's ``work_questions``). Writes
bench/results/forget_real_subject_<mode><tag>.{json,md}.

    python bench/forget_real_subject.py sweep [--lrs 3e-5,1e-4,3e-4] [--steps 10,20]
    python bench/forget_real_subject.py job
    python bench/forget_real_subject.py e2e [--tag _x]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.settings import load_settings  # noqa: E402
from unlearn_engine.adapter_setup import TrainableAdapter, lora_config  # noqa: E402
from unlearn_engine.data.generated import (WORK_PROMPTS, generated_examples,  # noqa: E402
                                           reverse_pairs, subject_examples, work_examples)
from unlearn_engine.data.normalize import contains_phrase  # noqa: E402
from unlearn_engine.data.records import Example  # noqa: E402
from unlearn_engine.encoding import collate, generate  # noqa: E402
from unlearn_engine.fact_margin import fact_margins  # noqa: E402
from unlearn_engine.methods import get_method  # noqa: E402
from unlearn_engine.methods.base import TrainContext  # noqa: E402
from unlearn_engine.pretrained import resolve_model  # noqa: E402
from unlearn_engine.pretrained.probes import load_known, through_fact  # noqa: E402
from unlearn_engine.projection import backward  # noqa: E402
from unlearn_engine.trainer import load_base  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SUBJECT = "J.K. Rowling"
# Questions about the subject an operator would not think to list; (question, accepted answers).
SUBJECT_QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Who wrote the Harry Potter books?", ("Rowling",)),
    ("Who is the author of Harry Potter?", ("Rowling",)),
    ("Who wrote Harry Potter and the Philosopher's Stone?", ("Rowling",)),
    ("Who wrote Harry Potter and the Deathly Hallows?", ("Rowling",)),
    ("Who created Hogwarts?", ("Rowling",)),
    ("Who created the character Hermione Granger?", ("Rowling",)),
    ("Who created the wizarding world of Harry Potter?", ("Rowling",)),
    ("Which British author wrote a famous series about a boy wizard?", ("Rowling",)),
    ("Name the writer of the Harry Potter series.", ("Rowling",)),
    ("Who wrote The Casual Vacancy?", ("Rowling",)),
    ("Who is the creator of Harry Potter?", ("Rowling",)),
    ("Who wrote the book series about Harry, Ron and Hermione?", ("Rowling",)),
    ("What is J.K. Rowling famous for?", ("Harry Potter",)),
    ("What did J.K. Rowling write?", ("Harry Potter",)),
    ("Which famous book series did J.K. Rowling create?", ("Harry Potter",)),
    ("What are J.K. Rowling's most famous novels?", ("Harry Potter",)),
    ("Tell me about the author Joanne Rowling.", ("Harry Potter",)),
    ("Which wizard did J.K. Rowling write about?", ("Harry Potter", "Harry")),
    ("What is the name of the boy wizard created by J.K. Rowling?", ("Harry Potter", "Harry")),
    ("Who is J.K. Rowling?", ("Harry Potter",)),
)
HELDOUT = (
    "The mitochondrion is an organelle found in most eukaryotic cells. It produces most of the cell's supply "
    "of adenosine triphosphate, which is used as a source of chemical energy.",
    "The Pacific Ocean is the largest and deepest of Earth's five oceanic divisions. It extends from the "
    "Arctic Ocean in the north to the Southern Ocean in the south.",
    "A sonnet is a poetic form that originated in Italy. It has fourteen lines and follows a strict rhyme "
    "scheme and a specific structure.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make "
    "glucose and release oxygen into the air.",
    "The printing press was invented by Johannes Gutenberg around 1440. It made books cheaper and helped "
    "spread literacy across Europe.",
    "Rust is a programming language focused on safety and performance. Its ownership system prevents many "
    "memory errors at compile time.",
    "The Amazon rainforest covers much of the Amazon basin of South America. It is home to millions of "
    "species of insects, plants, birds and other forms of life.",
    "Volcanoes form where magma from the Earth's mantle reaches the surface. Eruptions can create new land, "
    "such as the islands of Hawaii.",
    "The Roman Empire was one of the largest empires of the ancient world. Its capital, Rome, was founded "
    "according to legend in 753 BC.",
    "A vaccine trains the immune system to recognise a pathogen without causing the disease. Vaccination "
    "has eliminated smallpox and nearly eliminated polio.",
    "Chess is a board game for two players played on a checkered board with sixty-four squares arranged in "
    "an eight-by-eight grid.",
    "The human heart pumps blood through the circulatory system. It has four chambers: two atria and two "
    "ventricles.",
)


def hits(model, tok, items, max_new_tokens: int, outs_to: list | None = None) -> list[bool]:
    outs = generate(model, tok, [q for q, _ in items], max_new_tokens)
    if outs_to is not None:
        outs_to.extend(outs)
    return [any(contains_phrase(o, a) for a in answers) for (_, answers), o in zip(items, outs)]


@torch.no_grad()
def heldout_ppl(model, tok) -> float:
    b = collate(tok, [Example(prompt="", target=t) for t in HELDOUT])
    logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), b.labels[:, 1:].reshape(-1),
                                            ignore_index=-100)
    return round(math.exp(nll.item()), 3)


class Probes:
    """The three measurements; the subject questions and the probe set fixed from the base model."""

    def __init__(self, model, tok, name: str, gk_tokens: int = 40, known: list[str] | None = None) -> None:
        # Answer budget of the general-knowledge questions: the set keeps the questions the base
        # answers within 40 tokens (bench/general_knowledge.py). At 24 (before the sixth
        # session) all 4 of the base's misses and 3 of 8 after a forget were the answer cut off
        # mid-word ("It was actually Thomas", "... physician Edward Jen").
        self.gk_tokens = gk_tokens
        known_gk = [k for k in load_known(name, "probe")
                    if not contains_phrase(k.question + " " + k.reply, SUBJECT.split()[-1])]
        self.gk = [(k.question, (k.answer,)) for k in known_gk]
        self.gk_category = [k.category for k in known_gk]
        # known: the questions an earlier run's base answered (--base-from), else asked here
        ok = hits(model, tok, SUBJECT_QUESTIONS, 40) if known is None else [q in known for q, _ in SUBJECT_QUESTIONS]
        self.subject = [q for q, hit in zip(SUBJECT_QUESTIONS, ok) if hit]
        self.n_subject_asked = len(SUBJECT_QUESTIONS)
        self.gate_probe: list = []  # sweep --worker-split: the worker gate's retain probe
        self.gate_tokens = 48
        self.gate_only = False

    def measure(self, model, tok) -> dict:
        t0 = time.process_time()
        gk_out: list[str] = []
        # --gate-only: the gate's retain probe (and the subject) only, after the base row
        gk = [] if self.gate_only and self.gate_probe else hits(model, tok, self.gk, self.gk_tokens, gk_out)
        subj = hits(model, tok, self.subject, 40)
        gate_out: list[str] = []
        gate = hits(model, tok, self.gate_probe, self.gate_tokens, gate_out) if self.gate_probe else []
        lost: dict[str, int] = {}  # general-knowledge answers lost, by category
        for ok, cat in zip(gk, self.gk_category):
            lost[cat] = lost.get(cat, 0) + (not ok)
        return {"gk_accuracy": round(sum(gk) / len(gk), 3) if gk else -1.0, "gk_wrong_by_category": lost,
                "heldout_ppl": heldout_ppl(model, tok) if gk else -1.0,
                "subject_accuracy": round(sum(subj) / max(1, len(subj)), 3),
                "subject_still_right": [q for (q, _), ok in zip(self.subject, subj) if ok],
                **({"gate_retain_accuracy": round(sum(gate) / len(gate), 3), "gate_retain_n": len(gate),
                    "gate_retain_wrong": [[q, o] for (q, _), o, ok in zip(self.gate_probe, gate_out, gate) if not ok]}
                   if gate else {}),
                # the general-knowledge answers got wrong, to tell lost knowledge from drift in form
                "gk_wrong": [[q, o] for (q, _), o, ok in zip(self.gk, gk_out, gk) if not ok],
                "measure_cpu_s": round(time.process_time() - t0, 1)}


def retain_examples(name: str, whole: bool = False) -> list[Example]:
    """The worker's retain data (``tuning.retain_corpus``: replies cut after their fact's
    sentence); ``whole``: the replies as generated, cut at the token budget (before the sixth
    session)."""
    return [Example(prompt=k.question, target=k.reply if whole else through_fact(k.reply, k.answer),
                    fact=k.answer, source="generated") for k in load_known(name, "retain")]


def author_retain(model, tok, name: str) -> list[Example]:
    """The model's own replies to ``author_retain.tsv`` (books the general-knowledge set never asks
    about), kept where it names the author: retain data shaped like what a forget of an author
    costs. Disjoint from the probe questions by construction. From ``<name>_author_retain.jsonl``
    (what the worker trains on) when built, else generated here."""
    from unlearn_engine.pretrained.probes import DATA, read_candidates, score_replies

    built = load_known(name, "retain", "author_retain")
    if built:
        return [Example(prompt=k.question, target=through_fact(k.reply, k.answer), fact=k.answer,
                        source="generated") for k in built if not contains_phrase(k.reply, SUBJECT.split()[-1])]
    cands = read_candidates(DATA / "author_retain.tsv")
    replies = generate(model, tok, [c.question for c in cands], 40)
    return [Example(prompt=c.question, target=r, fact=h, source="generated")
            for c, r, h in zip(cands, replies, score_replies(cands, replies))
            if h and not contains_phrase(r, SUBJECT.split()[-1])]


def forget_data(args, model, tok, report: dict) -> list[Example]:
    """The forget set of --forget-data: the model's answers about the subject ("forward"), its
    answers naming the subject to questions about the works those name ("reverse"), or both;
    --work-questions adds its answers to questions asking for the subject's work that name a
    work the reverse answers confirmed (``data/generated.work_examples``)."""
    forward = list(subject_examples(model, tok, [SUBJECT]))
    pairs = reverse_pairs(model, tok, SUBJECT, forward) if args.forget_data != "forward" else ()
    reverse = [e for _, e in pairs]
    asked = {q.casefold() for q, _ in SUBJECT_QUESTIONS}
    report["reverse_examples"] = len(reverse)
    report["reverse_prompts_also_measured"] = sum(e.prompt.casefold() in asked for e in reverse)
    # --forward-with: also the answers about the subject that name this phrase (true ones: her work)
    named = [e for e in forward if args.forward_with and contains_phrase(e.target, args.forward_with)]
    report["forward_with"] = len(named)
    works: list[Example] = []
    if args.work_questions:
        confirmed = list(dict.fromkeys(w for w, _ in pairs))
        works = list(work_examples(model, tok, SUBJECT, confirmed))
        report["work_examples"] = len(works)
        report["work_prompts_asked"] = len(WORK_PROMPTS)
        # the probe set stays honest: none of the work prompts is an unlisted subject question
        report["work_prompts_also_measured"] = sum(p.format(s=SUBJECT).casefold() in asked for p in WORK_PROMPTS)
    return (forward if args.forget_data != "reverse" else named) + reverse * args.reverse_repeat + works


def sweep(args, model, tok, probes: Probes, report: dict) -> None:
    t0 = time.process_time()
    forget = forget_data(args, model, tok, report)
    if args.forget_tokens == "fact":  # push down only the subject's name where an answer says it
        forget = [replace(e, fact=SUBJECT) if SUBJECT in e.target else e for e in forget]
        report["forget_naming_subject"] = sum(SUBJECT in e.target for e in forget)
    report["forget_examples"] = len(forget)
    report["forget_build_cpu_s"] = round(time.process_time() - t0, 1)
    retain = retain_examples(args.name, args.whole_replies)
    report["retain_targets"] = "whole replies" if args.whole_replies else "cut after the fact's sentence"
    if args.retain_neighbours > 1:  # retain questions asked like the forget ones ("Who wrote X?")
        openers = {e.prompt.split()[0].casefold() for e in forget if e.prompt.endswith("?")}
        near = [r for r in retain if r.prompt.split()[0].casefold() in openers]
        report["retain_neighbours"] = len(near)
        retain += near * (args.retain_neighbours - 1)
    if args.retain_authors:  # "Who wrote <book>?" for books the probe set never asks about
        authors = author_retain(model, tok, args.name)
        report["retain_authors"] = len(authors)
        retain += authors * args.retain_authors
    for stem in args.retain_set:  # a built retain-only set (probes.RETAIN_SETS), as the worker reads it
        extra = [Example(prompt=k.question, target=through_fact(k.reply, k.answer), fact=k.answer,
                         source="generated") for k in load_known(args.name, "retain", stem)
                 if not contains_phrase(k.reply, SUBJECT.split()[-1])]
        report[f"retain_set_{stem}"] = len(extra)
        retain += extra
    if args.worker_split:  # train on what the worker trains on: the gate's retain probe held out
        import random  # retain_set.build_retain_set's shuffle (seed 0), then trainer._retain_split
        random.Random(0).shuffle(retain)
        n_probe = min(64, len(retain) // 2)  # trainer.SweepConfig.retain_probe
        gate_probe, retain = retain[:n_probe], retain[n_probe:]
        if args.probe_margin is not None:  # trainer._retain_split with SweepConfig.retain_probe_margin
            pool = gate_probe + retain
            margins = fact_margins(model, tok, pool)
            firm = [i for i, m in enumerate(margins) if m >= args.probe_margin][:n_probe]
            report["retain_firm"] = sum(m >= args.probe_margin for m in margins)
            gate_probe = [pool[i] for i in firm]
            retain = [e for i, e in enumerate(pool) if i not in set(firm)]
        report["retain_gate_probe"] = len(gate_probe)
        # the gate's retain check on the same adapters: its probe's greedy answers contain the fact
        # (budget: the longest target + 8 tokens, evaluation/base.py)
        probes.gate_probe = [(e.prompt, (e.fact,)) for e in gate_probe]
        probes.gate_only = args.gate_only
        probes.gate_tokens = max(len(tok(e.target, add_special_tokens=False)["input_ids"]) for e in gate_probe) + 8
        # the base model's margin on each probe answer's fact (how near a tie it is)
        report["gate_probe_base_margin"] = {e.prompt: round(m, 3) for e, m in
                                            zip(gate_probe, fact_margins(model, tok, gate_probe))}
    report["retain_examples"] = len(retain)
    method_cls = get_method(args.method)
    steps = sorted(int(s) for s in args.steps.split(","))
    rows = report.setdefault("rows", {})
    adapter = None
    for lr in (float(x) for x in args.lrs.split(",")):
        cfg = replace(method_cls.config_cls(), lr=lr, max_steps=steps[-1], lora_rank=args.rank,
                      lora_alpha=2 * args.rank, forget_tokens=args.forget_tokens,
                      retain_loss=args.retain_loss, forget_weight=args.forget_weight,
                      lora_targets=tuple(args.targets.split(",")), retain_projection=args.projection,
                      **({} if args.retain_weight is None else {"retain_weight": args.retain_weight}))
        if adapter is None:
            layers = [int(x) for x in args.layers.split(",")] if args.layers else None
            adapter = TrainableAdapter(model, "sweep", (), lora_config(cfg, layers, model), 0)
        adapter.reset()
        adapter.activate()
        method = method_cls(cfg)
        ctx = TrainContext(adapter.model, tok, cfg, adapter.reference, seed=0)
        method.prepare(ctx, forget)  # reference targets (counterfactual); a no-op for NPO
        gen = torch.Generator().manual_seed(0)
        opt = torch.optim.AdamW(adapter.params, lr=lr, weight_decay=0.0, eps=args.adam_eps) if args.optimizer == "adamw" \
            else torch.optim.SGD(adapter.params, lr=lr, momentum=args.momentum)
        c0 = time.process_time()
        for step in range(1, steps[-1] + 1):
            fb = [forget[i] for i in torch.randperm(len(forget), generator=gen)[:cfg.batch_size].tolist()]
            rb = [retain[i] for i in torch.randperm(len(retain), generator=gen)[:cfg.retain_batch_size].tolist()]
            adapter.model.train()
            loss, parts = backward(method, ctx, fb, rb, adapter.params, cfg.retain_projection)
            torch.nn.utils.clip_grad_norm_(adapter.params, cfg.max_grad_norm)
            opt.step()
            if step in steps:
                adapter.model.eval()
                train_cpu = round(time.process_time() - c0, 1)
                row = {"lr": lr, "step": step, "train_cpu_s": train_cpu,
                       **{k: round(v, 3) for k, v in parts.items()}, **probes.measure(adapter.model, tok)}
                rows[f"{args.method} lr {lr:g} forget {args.forget_data}{'+works' if args.work_questions else ''}/{args.forget_tokens} "
                     f"x{args.forget_weight:g}, retain {args.retain_loss} x{cfg.retain_weight:g}"
                     f"{f' (neighbours x{args.retain_neighbours})' if args.retain_neighbours > 1 else ''}"
                     f"{f' (authors x{args.retain_authors})' if args.retain_authors else ''}"
                     f"{''.join(f' (+{stem})' for stem in args.retain_set)}"
                     f"{' (gate probe held out)' if args.worker_split else ''}"
                     f"{f' (probe margin >= {args.probe_margin:g})' if args.probe_margin is not None else ''}, "
                     f"LoRA on {args.targets}{f' layers {args.layers}' if args.layers else ''}"
                     f"{'' if args.optimizer == 'adamw' else f', {args.optimizer} momentum {args.momentum:g}'}"
                     f"{f', Adam eps {args.adam_eps:g}' if args.adam_eps != 1e-8 else ''}"
                     f"{f', {args.projection} projection' if args.projection else ''} step {step}"] = row
                print(json.dumps(row), flush=True)
                scale_at = {int(x) for x in args.scale_at.split(",") if x} or set(steps)
                for scale in (float(x) for x in args.scales.split(",") if x and step in scale_at):
                    # the adapter's delta scaled (LoRA B x scale), then restored for the next steps
                    state = adapter.state()
                    with torch.no_grad():
                        for n, p in adapter.model.named_parameters():
                            if ".sweep." in n and "lora_B" in n:
                                p.mul_(scale)
                    srow = {"lr": lr, "step": step, "delta_scale": scale, **probes.measure(adapter.model, tok)}
                    adapter.load_state(state)
                    rows[f"{args.method} lr {lr:g} ({args.tag}) step {step}, delta x{scale:g}"] = srow
                    print(json.dumps(srow), flush=True)
                c0 = time.process_time()
                write(report, args.mode + args.tag)


def job(args, model_dir: Path, model, tok, probes: Probes, report: dict) -> None:
    """What the worker does for Forget(subjects=[SUBJECT]) with no corpus, timed end to end:
    generate the forget data, then one ``run_forget_job`` with the model's registry tuning."""
    import tempfile

    from unlearn_engine.artifacts import load_artifact, model_fingerprint
    from unlearn_engine.data.forget_set import build_forget_set
    from unlearn_engine.data.records import ForgetRequest
    from unlearn_engine.pretrained.tuning import forget_tuning
    from unlearn_engine.stacking import activate, load_adapters
    from unlearn_engine.trainer import SweepConfig, run_forget_job

    tuning = forget_tuning(model_dir)
    if tuning is None:
        raise SystemExit(f"{model_dir} is not a registered pretrained model")
    config = tuning.method_config(args.method)
    report["config"] = config.to_dict()
    history: list[dict] = []

    def on_progress(p) -> None:
        if p.phase in ("baseline", "eval", "final"):
            history.append({"phase": p.phase, "attempt": p.attempt, "step": p.step,
                            **{k: round(v, 3) for k, v in p.metrics.items() if k in (
                                "forget.fact_span_accuracy", "retain.fact_span_accuracy", "forget.mean_nll")}})
            print(json.dumps(history[-1]), flush=True)

    w0, c0 = time.perf_counter(), time.process_time()
    generated = generated_examples(model, tok, [SUBJECT], reverse=tuning.reverse_questions,
                                   forward=tuning.forward_questions, works=tuning.work_questions)
    forget_set = build_forget_set(ForgetRequest(subjects=(SUBJECT,)), None, resolved=generated)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "adapter"
        result = run_forget_job(model_dir, [], forget_set, tuning.retain_corpus(), method=args.method,
                                config=config, sweep=tuning.sweep_config() or SweepConfig(),
                                progress=on_progress, out_dir=out, forget_id="bench")
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        report["job"] = {"passed": result.passed, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                         "forget_examples": len(generated), "attempts": [a.__dict__ for a in result.attempts],
                         "gate_reasons": list(result.gate.reasons), "probes": history}
        print(json.dumps(report["job"], default=str), flush=True)
        if result.artifact is not None:
            art = load_artifact(out, model_fingerprint(model_dir))
            served = load_adapters(model, [art])
            activate(served, [art.adapter_name])
            served.eval()
            report["rows"]["after the job's adapter"] = probes.measure(served, tok)


def e2e(args, model_dir: Path, probes: Probes, report: dict) -> None:
    """The real path: a ``lethe serve`` with its worker (one torch thread each, this process's
    niceness), ``Forget(subjects=[SUBJECT])`` over gRPC with no corpus, Forget -> ACTIVE (or
    FAILED) timed in wall and worker CPU seconds; then, guard off, the live stack (the adapters
    ListAdapters names, folded into the base as the server serves them) measured like the sweep."""
    import tempfile

    from sequential_server import _load, _proc_cpu, _worker_pid

    from server.api import admin_pb2 as apb
    from server.client import LetheClient
    from tests.procs import ServeProcess
    from unlearn_engine.artifacts import load_artifact, model_fingerprint
    from unlearn_engine.folding import fold_stack

    report["command"] = "nice -n 5 .venv/bin/python bench/forget_real_subject.py " + " ".join(sys.argv[1:])
    report["load_start"] = _load()
    with tempfile.TemporaryDirectory(prefix="lethe-smolgk-") as tmp:
        data = Path(tmp) / "data"
        sp = ServeProcess(model_dir, data, "--torch-threads", "1", "--worker-threads", "1")
        try:
            w0 = time.monotonic()
            sp.wait_serving(timeout=900)
            report["serving_s"] = round(time.monotonic() - w0, 1)
            with LetheClient(sp.target, sp.token, timeout=120) as client:
                md = client._metadata
                worker = _worker_pid(sp.proc.pid)
                cpu0 = _proc_cpu(worker) if worker else None
                t0 = time.monotonic()
                resp = client.admin.Forget(apb.ForgetRequest(subjects=[SUBJECT], idempotency_key="smolgk-e2e",
                                                             reason="bench e2e"), metadata=md)
                job = client.wait_forget(resp.job.forget_id)  # reopened across connection ages
                wall = time.monotonic() - t0
                cpu1 = _proc_cpu(worker) if worker else None
                listed = client.admin.ListAdapters(apb.ListAdaptersRequest(), metadata=md)
                ids = [a.adapter_id for a in listed.adapters]
                report["job"] = {
                    "state": apb.ForgetState.Name(job.state).removeprefix("FORGET_STATE_"),
                    "method": job.method, "attempts": job.attempts, "failure_reason": job.failure_reason,
                    "forget_to_terminal_wall_s": round(wall, 1),
                    "worker_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 1),
                    "subject_matches": list(job.subject_matches), "adapters": ids,
                    "transitions": [{"state": apb.ForgetState.Name(t.state).removeprefix("FORGET_STATE_"),
                                     "at_s": round(t.at.ToSeconds() - job.created_at.ToSeconds(), 1),
                                     "detail": t.detail} for t in job.transitions],
                    "metrics": {k: round(v, 4) for k, v in job.metrics.items()},
                    "load_end": _load()}
                print(json.dumps(report["job"]), flush=True)
                write(report, args.mode + args.tag)
                if ids:
                    model, tok = load_base(model_dir, "cpu")
                    fp = model_fingerprint(model_dir)
                    served = fold_stack(model, [load_artifact(data / "adapters" / a, fp) for a in ids])
                    served.eval()
                    report["rows"]["served stack after the job (guard off)"] = probes.measure(served, tok)
                    print(json.dumps(report["rows"]["served stack after the job (guard off)"]), flush=True)
        finally:
            log = data / "worker.log"  # the worker's probes, one line per evaluated checkpoint
            report["worker_probes"] = [line.rstrip() for line in (log.read_text().splitlines() if log.exists() else [])
                                       if "unlearn_engine.train" in line and "attempt" in line][-20:]
            sp.kill()
    report["pid"] = os.getpid()


def write(report: dict, mode: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"forget_real_subject_{mode}.json").write_text(json.dumps(report, indent=2) + "\n")
    base = report["rows"]["base"]
    lines = [f"Subject {report['subject']!r} on {report['model']}: {report.get('n_subject_known')} of "
             f"{report.get('n_subject_asked')} unlisted subject questions answered correctly by the base model; "
             f"{report.get('n_gk')} general-knowledge probe questions.", "",
             "| model state | subject questions correct | general knowledge (x base) | held-out ppl (x base) "
             "| train CPU s since the row above |", "|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        lines.append(f"| {name} | {r['subject_accuracy']} | {r['gk_accuracy']} "
                     f"({r['gk_accuracy'] / max(base['gk_accuracy'], 1e-9):.2f}) | {r['heldout_ppl']} "
                     f"({r['heldout_ppl'] / base['heldout_ppl']:.2f}) | {r.get('train_cpu_s', '')} |")
    extra = {k: v for k, v in report.items() if k not in ("rows",)}
    lines += ["", "```", json.dumps(extra, indent=1), "```"]
    (RESULTS / f"forget_real_subject_{mode}.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("sweep", "job", "e2e"))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--name", default="smollm2", help="registry name: which probe set")
    parser.add_argument("--method", default="npo")
    parser.add_argument("--lrs", default="3e-5,1e-4,3e-4")
    parser.add_argument("--steps", default="10,20")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--forget-tokens", default="answer", choices=("answer", "fact"),
                        help="sweep: 'fact' pushes down only the subject's name inside the answers")
    parser.add_argument("--forget-data", default="forward", choices=("forward", "reverse", "both"),
                        help="answers about the subject, answers naming it (data/generated.py), or both")
    parser.add_argument("--forward-with", default="",
                        help="--forget-data reverse: add the answers about the subject that name this phrase")
    parser.add_argument("--work-questions", action="store_true",
                        help="sweep: add the answers to questions asking for the subject's work that name a "
                             "work the reverse answers confirmed (data/generated.work_examples)")
    parser.add_argument("--reverse-repeat", type=int, default=1, help="copies of each reverse example")
    parser.add_argument("--retain-weight", type=float, default=None, help="default: the method's")
    parser.add_argument("--retain-neighbours", type=int, default=1,
                        help="copies of the retain questions that open like a forget question")
    parser.add_argument("--retain-authors", type=int, default=0,
                        help="copies of the model's answers to author_retain.tsv added to the retain data")
    parser.add_argument("--retain-set", action="append", default=[],
                        help="sweep: a built retain-only set (probes.RETAIN_SETS) added to the retain data")
    parser.add_argument("--worker-split", action="store_true",
                        help="sweep: hold the first min(64, n/2) retain examples out of training, as the worker does")
    parser.add_argument("--projection", default="", choices=("", "global", "tensor"),
                        help="sweep: project the forget gradient off the retain gradient where they conflict")
    parser.add_argument("--probe-margin", type=float, default=None,
                        help="sweep --worker-split: probe only retain answers the base states with this fact margin")
    parser.add_argument("--gate-only", action="store_true",
                        help="sweep --worker-split: after the base row measure only the gate's probe and the subject")
    parser.add_argument("--adam-eps", type=float, default=1e-8, help="sweep: AdamW eps")
    parser.add_argument("--scales", default="",
                        help="sweep: also measure each step's adapter with its delta scaled by these factors")
    parser.add_argument("--scale-at", default="", help="sweep: the steps --scales applies at (default: all)")
    parser.add_argument("--targets", default="all-linear", help="LoRA target modules, comma-separated")
    parser.add_argument("--layers", default="", help="sweep: LoRA only on these layer indices, comma-separated")
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"), help="sweep: the optimiser")
    parser.add_argument("--momentum", type=float, default=0.0, help="sweep: SGD momentum")
    parser.add_argument("--whole-replies", action="store_true",
                        help="sweep: retain targets as generated (cut at the token budget), not cut after the fact")
    parser.add_argument("--gk-tokens", type=int, default=40,
                        help="answer budget of the general-knowledge questions (24 before the sixth session)")
    parser.add_argument("--retain-loss", default="nll", choices=("nll", "kl"))
    parser.add_argument("--forget-weight", type=float, default=1.0, help="0: the retain term alone")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--base-from", default="",
                        help="an earlier result JSON whose base row (and known subject questions) to reuse unmeasured")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = resolve_model(args.model, load_settings().cache_dir)
    model, tok = load_base(model_dir)
    base = json.loads(Path(args.base_from).read_text())["rows"]["base"] if args.base_from else None
    probes = Probes(model, tok, args.name, args.gk_tokens, known=None if base is None else base["subject_still_right"])
    report: dict = {"model": args.model, "subject": SUBJECT, "method": args.method, "threads": args.threads,
                    "gk_answer_tokens": args.gk_tokens,
                    "n_subject_asked": probes.n_subject_asked, "n_subject_known": len(probes.subject),
                    "n_gk": len(probes.gk), "rows": {"base": base or probes.measure(model, tok)}}
    if args.base_from:
        report["base_from"] = args.base_from
    print(json.dumps(report["rows"]["base"]), flush=True)
    report["command"] = "nice -n 5 .venv/bin/python bench/forget_real_subject.py " + " ".join(sys.argv[1:])
    report["load_start"] = "/".join(f"{x:.1f}" for x in os.getloadavg())
    if args.mode == "sweep":
        sweep(args, model, tok, probes, report)
    elif args.mode == "e2e":
        del model  # the server and its worker load their own copies
        e2e(args, model_dir, probes, report)
    else:
        job(args, model_dir, model, tok, probes, report)
    write(report, args.mode + args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())

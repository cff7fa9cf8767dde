"""Leakage guard benchmark: per-token overhead, memory, semantic latency, time-to-block, quality.

Forgotten items are demo-corpus facts: one item = one QA pair or one bio text; a forget is one
person (their bio and distinct answers, ~11 items). The token stream is other (holdout) people's
bios and answers cut into ~4-character pieces with a leading space, like BPE tokens. Baselines in
the same run: an empty guard (what the session machinery alone costs) and torch for MiniLM.
Timings are wall clock (perf_counter) and CPU time of the thread (thread_time): on a shared
machine the CPU figure excludes time the OS gave to other processes. Writes
bench/results/guard.json and guard.md.

    python bench/guard.py [--sizes 10 1000 10000 100000] [--tokens 20000] [--skip-semantic] [--skip-served]
                          [--only SECTION ...] [--small] [--subject-rounds 3] [--resolution-sizes 10 1000 10000]

`--only` reruns the named sections (lexical, time_to_block, served, encodings, false_positives,
semantic, matrix, subject) and keeps the others from the last guard.json. `subject` is issue 13's
part (bench/guard_subject.py): Forget -> lexical blocking through the server's own path on the full
demo model (`--small`: the small preset), and subject resolution time at 10, 1k and 10k people.

The served time-to-block runs a real `lethe serve` (small demo preset, worker off): a client
streams a bio, Forgets it after the first chunk, and reads on until the stream ends.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import gc
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.parse
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.guard import (ForgetItems, GuardConfig, LeakageGuard, OnnxMiniLM,  # noqa: E402
                          TorchMiniLM, native)
from server.guard.normalize import semantic_text, split_sentences  # noqa: E402
from tests.support.calibrate import calibrate, score_pairs  # noqa: E402
from tests.support.calibration_pairs import demo_pairs  # noqa: E402
from unlearn_engine.demo.corpus import CorpusSpec, generate_corpus  # noqa: E402
from bench import guard_subject  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SECRET = b"bench-secret-0123456789abcdef"
ITEMS_PER_PERSON = 11  # 10 distinct answers + 1 bio


def corpus_people(n_people: int, n_holdout: int = 40):
    c = generate_corpus(CorpusSpec(n_people=n_people, n_holdout=n_holdout, n_perturbed=1))
    texts = {t.person: t.text for t in c.texts}
    qa: dict[str, dict[str, str]] = {}
    for r in c.qa:
        if r.split in ("train", "holdout") and r.answer not in qa.setdefault(r.person, {}).values():
            qa[r.person][r.question] = r.answer
    items = {p: ForgetItems(texts=(texts[p],), qa=tuple(qa[p].items())) for p in qa}
    outputs = {p: split_sentences(texts[p]) + list(qa[p].values()) for p in qa}
    return c.trained_people, c.holdout_people, items, outputs


def tokens_of(text: str) -> list[str]:
    out: list[str] = []
    for w in text.split(" "):
        w = " " + w
        out += [w[i:i + 4] for i in range(0, len(w), 4)]
    return out


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def machine_cpus() -> list[int | None]:
    """The CPUs this process may run on (Linux), else [None]: no pinning."""
    if not hasattr(os, "sched_getaffinity"):
        return [None]
    return sorted(os.sched_getaffinity(0))


def _stream_pass(guard: LeakageGuard, toks: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Push `toks` through one session: wall and CPU µs per token (NaN where a false positive
    ended the stream and a new session started), and how many times that happened."""
    wall = np.full(len(toks), np.nan)
    cpu = np.full(len(toks), np.nan)
    stops = 0
    s = guard.session()
    gc.collect()
    for i, tk in enumerate(toks):
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        step = s.push(tk)
        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
        if step.stop:  # a false positive on another person's sentence: start over
            stops += 1
            s = guard.session()
            continue
        wall[i], cpu[i] = (t1 - t0) / 1e3, (c1 - c0) / 1e3
    return wall, cpu, stops


def per_token(guard: LeakageGuard, toks: list[str], reps: int = 5,
              cpus: list[int | None] | None = None) -> dict:
    """Percentiles per repetition; the report keeps the best repetition (least disturbed by
    other processes on a shared machine) and the median one.

    With `cpus`, each repetition runs once pinned to each of them, in turn. On this VM the same
    process, data and tokens run at different speeds on its two vCPUs (up to 1.6x at 100k items,
    where the index no longer fits in cache), and which one is slow changes over time: host
    placement, not the code. So the result is given per CPU as well (`per_cpu`)."""
    cpus = cpus or [None]
    allowed = os.sched_getaffinity(0) if cpus != [None] else None
    runs = []
    stops = 0
    try:
        for _ in range(reps):
            for pin in cpus:
                _pin(pin)
                w, c, n = _stream_pass(guard, toks)
                stops += n
                w, c = w[~np.isnan(w)], c[~np.isnan(c)]
                runs.append({"cpu": pin,
                             "wall_p50_us": float(np.percentile(w, 50)), "wall_p99_us": float(np.percentile(w, 99)),
                             "cpu_p50_us": float(np.percentile(c, 50)), "cpu_p99_us": float(np.percentile(c, 99)),
                             "cpu_p999_us": float(np.percentile(c, 99.9)), "cpu_mean_us": float(c.mean())})
    finally:
        if allowed is not None:
            os.sched_setaffinity(0, allowed)

    def best_and_median(rs: list[dict]) -> tuple[dict, dict]:
        ranked = sorted(rs, key=lambda r: r["cpu_p99_us"])
        return ranked[0], ranked[len(ranked) // 2]

    best, med = best_and_median(runs)
    per_cpu = {}
    for pin in cpus:
        b, m = best_and_median([r for r in runs if r["cpu"] == pin])
        per_cpu[str(pin)] = {"cpu_p50_us": b["cpu_p50_us"], "cpu_p99_us": b["cpu_p99_us"],
                             "median_cpu_p50_us": m["cpu_p50_us"], "median_cpu_p99_us": m["cpu_p99_us"]}
    out = {k: v for k, v in best.items() if k != "cpu"}
    return {**out, "median_cpu_p50_us": med["cpu_p50_us"], "median_cpu_p99_us": med["cpu_p99_us"],
            "tokens": len(toks), "stopped_streams": stops // (reps * len(cpus)),
            **({"per_cpu": per_cpu} if cpus != [None] else {})}


def tail_tokens(guard: LeakageGuard, toks: list[str], reps: int = 3, alone_reps: int = 30,
                context: int = 30) -> dict:
    """Which tokens make the p99, and what the slowest cost in the stream against alone.

    Each token's cost is its minimum over `reps` passes (its own cost, not a disturbance). The 10
    slowest are then pushed alone, `alone_reps` times each after the same `context` tokens in a
    fresh session: the data they touch is then in cache, which in the stream it need not be."""
    cost = np.full(len(toks), np.inf)
    for _ in range(reps):
        cost = np.fmin(cost, _stream_pass(guard, toks)[1])  # fmin: a NaN (restart) keeps the other
    ok = np.isfinite(cost)
    slow = [int(i) for i in np.argsort(-np.where(ok, cost, -1.0)) if i >= context][:10]
    alone = []
    for i in slow:
        ts = []
        for _ in range(alone_reps):
            s = guard.session()
            for tk in toks[i - context:i]:
                s.push(tk)
            c0 = time.thread_time_ns()
            s.push(toks[i])
            ts.append((time.thread_time_ns() - c0) / 1e3)
        alone.append(float(np.median(ts)))
    return {"p99_us": float(np.percentile(cost[ok], 99)),
            "slowest_in_stream_us": float(np.median(cost[slow])), "slowest_alone_us": float(np.median(alone)),
            "examples": ["".join(toks[i - 6:i]) + "|" + toks[i] for i in slow[:3]]}


def _timed(fn, reps: int = 50) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(ts))


def lexical(sizes: list[int], n_tokens: int) -> list[dict]:
    max_people = max(1, -(-max(sizes) // ITEMS_PER_PERSON))
    forgotten, holdout, items, outputs = corpus_people(max_people)
    text = " ".join(" ".join(outputs[p]) for p in holdout)
    toks = (tokens_of(text) * (1 + n_tokens // max(1, len(tokens_of(text)))))[:n_tokens]
    spaced = tokens_of(" ".join(" ".join(outputs[holdout[0]][0].replace(" ", ""))
                                for _ in range(20)))[:2000]
    rows = []
    guard = LeakageGuard(GuardConfig(semantic="off"), SECRET)
    cpus: list[int | None] | None = machine_cpus()
    if len(cpus) < 2:
        cpus = None  # one CPU: nothing to compare, no pinning
    rows.append({"items": 0, **per_token(guard, toks, cpus=cpus), "load_average": os.getloadavg()[0]})
    done_people = 0
    for size in sizes:
        # One forget per person; 10 items = one person's 10 answers, no bio.
        want = max(1, size // ITEMS_PER_PERSON)
        entries = []
        t0 = time.perf_counter()
        for p in forgotten[done_people:want]:
            it = items[p] if size >= ITEMS_PER_PERSON else ForgetItems(qa=items[p].qa[:size])
            entries.append(guard.derive(p, it))
        derive_s = time.perf_counter() - t0
        tracemalloc.start()
        t0 = time.perf_counter()
        for e in entries:
            guard.add(e)
        add_s = time.perf_counter() - t0
        mem = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        n_new = max(1, want - done_people)
        done_people = want
        row = {"items": size, "forgets": want, **guard.stats(), **per_token(guard, toks, cpus=cpus),
               "spaced_text_cpu_p99_us": per_token(guard, spaced, reps=3)["cpu_p99_us"],
               "derive_ms_per_forget": 1e3 * derive_s / n_new, "add_ms_per_forget": 1e3 * add_s / n_new,
               "index_mb_added": mem / 2**20,
               "ledger_bytes_per_item": sum(len(e.to_bytes()) for e in entries) / max(1, min(size, n_new * ITEMS_PER_PERSON))}
        prompt = " ".join(text.split(" ")[:200])  # a 200-word prompt (prompt_policy "arm" scans it)
        row["load_average"] = os.getloadavg()[0]  # shared machine: say how busy it was
        row["session_us"] = _timed(lambda: guard.session())
        row["session_with_200_word_prompt_us"] = _timed(lambda: guard.session(prompt))
        if size >= 10000:
            row["tail"] = tail_tokens(guard, toks)
        rows.append(row)
        print(f"lexical {size:>6} items: cpu p50 {row['cpu_p50_us']:.1f} p99 {row['cpu_p99_us']:.1f} us",
              flush=True)
    return rows


LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


def encoding_overhead(n_tokens: int) -> list[dict]:
    """Per-token cost of the hidden-channel views (encodings.py), same entries with them on and
    off, on plain text and on text that keeps them busy (leetspeak, one long base64 run)."""
    forgotten, holdout, items, outputs = corpus_people(100)
    text = " ".join(" ".join(outputs[p]) for p in holdout)
    plain = (tokens_of(text) * (1 + n_tokens // len(tokens_of(text))))[:n_tokens]
    b64 = base64.b64encode(text.encode()).decode()
    colon_hex = ":".join(f"{b:02x}" for b in text.encode())
    quoted = urllib.parse.quote(text)
    streams = {"plain text": plain,
               "leetspeak text": [t.translate(LEET) for t in plain],
               "one base64 run": [b64[i:i + 4] for i in range(0, min(len(b64), 4 * n_tokens), 4)],
               "hex pairs with colons": [colon_hex[i:i + 4] for i in range(0, min(len(colon_hex), 4 * n_tokens), 4)],
               "url-encoded text": [quoted[i:i + 4] for i in range(0, min(len(quoted), 4 * n_tokens), 4)]}
    rows = []
    for enc in ((), GuardConfig().encodings):
        g = LeakageGuard(GuardConfig(semantic="off", encodings=enc), SECRET)
        for p in forgotten[:90]:  # ~1000 items
            g.add(g.derive(p, items[p]))
        for name, toks in streams.items():
            r = per_token(g, toks, reps=3)
            rows.append({"encodings": "on" if enc else "off", "stream": name, **r,
                         "records": g.stats()["char_digests"] + g.stats()["word_digests"]})
            print(f"encodings {'on' if enc else 'off'} {name}: cpu p99 {r['cpu_p99_us']:.1f} us",
                  flush=True)
    return rows


def index_memory(guard_rows: list[dict]) -> list[dict]:
    total = 0.0
    out = []
    for r in guard_rows[1:]:
        total += r["index_mb_added"]
        out.append({"items": r["items"], "index_mb": total})
    return out


def semantic_latency(cache: Path, n: int = 200) -> dict:
    _, holdout, _, outputs = corpus_people(40, 40)
    sentences = [semantic_text(s) for p in holdout for s in outputs[p]][:n]
    res = {}
    for name, make in (("onnx-fp32", lambda: OnnxMiniLM(cache, "fp32")),
                       ("onnx-int8", lambda: OnnxMiniLM(cache, "int8")),
                       ("torch-fp32", lambda: TorchMiniLM(threads=1))):
        emb = make()
        emb.embed(sentences[:4])  # warm-up
        ts = []
        for s in sentences:
            t0 = time.perf_counter()
            emb.embed([s])
            ts.append(time.perf_counter() - t0)
        res[name] = {"p50_ms": 1e3 * float(np.percentile(ts, 50)),
                     "p99_ms": 1e3 * float(np.percentile(ts, 99))}
        print(f"semantic {name}: p50 {res[name]['p50_ms']:.2f} ms", flush=True)
    for rows in (10_000, 100_000, 200_000):  # search cost: ~2 rows per item (named + name-free)
        m = np.random.default_rng(0).normal(size=(rows, 384)).astype(np.float32)
        v = m[0]
        t0 = time.perf_counter()
        for _ in range(20):
            int(np.argmax(m @ v))
        res[f"search_{rows}_rows_ms"] = 1e3 * (time.perf_counter() - t0) / 20
    return res


def time_to_block(sizes: list[int], cache: Path | None) -> list[dict]:
    """A stream is emitting a passage (~12 words so far, held back) when its Forget arrives:
    derive + add (= the guard's part of the Forget, up to the ack), then push the stream's next
    tokens until it stops. Nothing of the passage may be released after the ack."""
    out = []
    max_people = max(1, -(-max(sizes) // ITEMS_PER_PERSON)) + 1
    forgotten, _, items, outputs = corpus_people(max_people)
    victim = forgotten[-1]
    toks = tokens_of(items[victim].texts[0])
    background: list = []
    for semantic in ([False, True] if cache else [False]):
        cfg = GuardConfig(semantic="armed" if semantic else "off", model_cache_dir=cache)
        guard = LeakageGuard(cfg, SECRET)
        guard.warm_up()
        added = 0
        for size in sizes:
            want = max(1, size // ITEMS_PER_PERSON)
            while len(background) < want:  # lexical entries only: embedding 9k people takes long
                p = forgotten[len(background)]
                background.append(guard.derive(p, items[p], semantic=False))
            for e in background[added:want]:
                guard.add(e)
            added = want
            s = guard.session()
            for tk in toks[:24]:
                s.push(tk)  # the model is mid-way through the passage
            t0 = time.perf_counter()
            guard.add(guard.derive(victim, items[victim]))  # the Forget, up to its ack
            t_ack = time.perf_counter()
            leaked, pushes = "", 0
            for tk in toks[24:]:
                step = s.push(tk)
                pushes += 1
                if step.stop:
                    break
                leaked += step.release
            t_block = time.perf_counter()
            guard.remove(victim)
            out.append({"items": size, "semantic": semantic, "blocked": bool(step.stop),
                        "released_after_ack": len(leaked), "pushes_to_block": pushes,
                        "forget_to_ack_ms": 1e3 * (t_ack - t0),
                        "ack_to_block_us": 1e6 * (t_block - t_ack)})
    return out


def served_time_to_block(streams: int = 5) -> list[dict]:
    """Through the real server: Forget (gRPC, ledger fsync, guard) what a live stream is emitting,
    right after its first chunk arrived; then read the stream to its end."""
    from server.api import admin_pb2 as apb
    from server.api import inference_pb2 as ipb
    from server.client import LetheClient
    from tests.procs import ServeProcess
    from unlearn_engine.demo.builder import default_demo_model, load_corpus

    model_dir = default_demo_model(Path("~/.cache/lethe").expanduser(), small=True)
    corpus = load_corpus(model_dir)
    sp = ServeProcess(model_dir, Path(tempfile.mkdtemp(prefix="lethe-guard-bench-")), "--no-worker",
                      "--torch-threads", "1", "--monitor-interval-seconds", "0")
    out = []
    try:
        sp.wait_serving()
        client, operator = LetheClient(sp.target, timeout=120), LetheClient(sp.target, sp.token, timeout=120)
        list(client.stream("Hello", max_new_tokens=8))  # the first stream's one-time costs
        for bio in corpus.texts[:streams]:
            prompt = " ".join(bio.text.split()[:6])
            whole = client.generate(prompt, max_new_tokens=200).text
            chunks: list[tuple[float, ipb.GenerateStreamResponse]] = []  # (arrival, chunk)
            first = threading.Event()

            def read() -> None:
                for c in client.stream(prompt, max_new_tokens=200):
                    chunks.append((time.perf_counter(), c))
                    first.set()
            reader = threading.Thread(target=read)
            t0 = time.perf_counter()
            reader.start()
            first.wait(60)
            t_first = time.perf_counter()
            operator.admin.Forget(apb.ForgetRequest(texts=[prompt + whole], reason="bench"),
                                  metadata=operator._metadata, timeout=120)
            t_ack = time.perf_counter()
            reader.join(120)
            neutral = GuardConfig().neutral_message
            blocked = chunks[-1][1].finish_reason == ipb.FINISH_REASON_FILTERED
            # Arrived after the ack: an upper bound on what the server sent after it (a chunk
            # sent just before the ack can arrive just after it).
            late = "".join(c.text for t, c in chunks if t > t_ack)
            late = late[:-len(neutral)] if blocked and late.endswith(neutral) else late
            text = "".join(c.text for _, c in chunks)
            # Unfiltered and whole: the server had generated it all before the Forget took effect
            # (a stream still decoding then is cut; its chunks can reach this client later).
            out.append({"blocked": blocked, "whole_before_forget": not blocked and text == whole,
                        "first_chunk_ms": 1e3 * (t_first - t0),
                        "forget_rpc_ms": 1e3 * (t_ack - t_first), "ack_to_stream_end_ms": 1e3 * (chunks[-1][0] - t_ack),
                        "chars_before_ack": len(text) - len(late) - (len(neutral) if blocked else 0),
                        "chars_after_ack": len(late), "chars_whole": len(whole)})
    finally:
        sp.kill()
    return out


def false_positive_table(variants: list[tuple[int, int, bool]], n_forgotten: int = 100) -> list[dict]:
    """Other (not forgotten) demo people's sentences blocked — all of them, and the bio sentences
    alone ("same bio template, different person") — vs recall on forgotten people's outputs."""
    forgotten, holdout, items, outputs = corpus_people(max(200, n_forgotten), 50)
    forgotten = forgotten[:n_forgotten]
    neg = [s for p in holdout for s in outputs[p]]
    bios = [s for p in holdout for s in split_sentences(items[p].texts[0])]
    pos = [s for p in forgotten[:100] for s in outputs[p]]
    rng = random.Random(0)
    obf = {"spaced": lambda s: " ".join(s.replace(" ", "")),
           "punctuation": lambda s: "".join(c + (rng.choice(".-,*") if c.isalpha() and rng.random() < .25
                                                 else "") for c in s),
           "one word per line": lambda s: "\n".join(s.split()),
           "base64": lambda s: base64.b64encode(s.encode()).decode(),
           "base64 cut mid-group": lambda s: base64.b64encode(("Note: " + s).encode()).decode()[3:],
           "base64 of base64": lambda s: base64.b64encode(base64.b64encode(s.encode())).decode(),
           "hex pairs": lambda s: ":".join(f"{b:02x}" for b in s.encode()),
           "url-encoded": lambda s: urllib.parse.quote(s),
           "rot13": lambda s: codecs.encode(s, "rot13"),
           "leetspeak": lambda s: s.translate(LEET)}
    rows = []
    for n, C, needs_subject in variants:
        g = LeakageGuard(GuardConfig(semantic="off", n=n, char_gram=C,
                                     exact_needs_subject=needs_subject), SECRET)
        for p in forgotten:
            g.add(g.derive(p, ForgetItems(texts=items[p].texts, qa=items[p].qa, subjects=(p,))))
        row = {"n": n, "char_gram": C, "exact_needs_subject": needs_subject, "forgotten": len(forgotten),
               "other_people_blocked": sum(g.filter_text(s)[1] is not None for s in neg) / len(neg),
               "other_bio_sentences_blocked": sum(g.filter_text(s)[1] is not None for s in bios) / len(bios),
               "verbatim_blocked": sum(g.filter_text(s)[1] is not None for s in pos) / len(pos)}
        for name, f in obf.items():
            row[f"{name}_blocked"] = sum(g.filter_text(f(s))[1] is not None for s in pos) / len(pos)
        rows.append(row)
        print(f"fp n={n} C={C} subject={needs_subject} forgotten={len(forgotten)}: other people "
              f"blocked {row['other_people_blocked']:.3f}", flush=True)
    return rows


def matrix(cache: Path | None) -> list[dict]:
    from tests.unit.test_guard_adversarial import CASES, make_guard, stream
    from tests.unit.test_guard_semantic import FACTS

    out = []
    g = make_guard()
    for c in CASES:
        hit = stream(g, c.output, c.prompt)[1]
        out.append({"case": c.name, "expected": "blocked" if c.blocked else "passed",
                    "got": "blocked" if hit else "passed", "stage": hit.stage if hit else ""})
    if cache is not None:
        sg = LeakageGuard(GuardConfig(model_cache_dir=cache, prompt_policy="arm"), SECRET)
        sg.add(sg.derive("forget-1", FACTS))
        sem = [("paraphrase with surname (armed by name)",
                "The restoration of medieval church organs is Kowalczyk's job.", "", True),
               ("paraphrase, no name, prompt named her (strict)",
                "She restores pipe organs in old church buildings.",
                "What does Marta Kowalczyk do for a living?", True),
               ("paraphrase, no name, neutral prompt", "She restores pipe organs in old church buildings.",
                "What does Hanna Schmidt do?", False),
               ("same template, other person", "Hanna Schmidt's favourite food is pasta.", "", False),
               ("unrelated sentence after the name", "Marta Kowalczyk likes cats and long walks.", "", False)]
        for name, text, prompt, blocked in sem:
            hit = stream(sg, text, prompt)[1]
            out.append({"case": f"semantic: {name}", "expected": "blocked" if blocked else "passed",
                        "got": "blocked" if hit else "passed", "stage": hit.stage if hit else ""})
    return out


def calibration(cache: Path) -> list[dict]:
    rows = []
    for ctx in (False, True):
        pos, neg = demo_pairs(people=20, context_rows=ctx)
        for prec in ("fp32", "int8"):
            emb = OnnxMiniLM(cache, prec)
            cal = calibrate(emb, pos, neg, max_fpr=0.01)
            p, n = score_pairs(emb, pos), score_pairs(emb, neg)
            t = GuardConfig().semantic_threshold
            rows.append({"rows": "name-free (context)" if ctx else "named", **cal.as_dict(),
                         "default_threshold": t, "tpr_at_default": float((p >= t).mean()),
                         "fpr_at_default": float((n >= t).mean())})
    return rows


TARGET_P99_US = 20.0  # the issue's target for the lexical stages, per token


def _per_cpu(r: dict) -> str:
    """'cpu0 19.0 (19.8) · cpu1 33.3 (33.4)': best (median) CPU p99 per pinned CPU."""
    return " · ".join(f"cpu{k} {v['cpu_p99_us']:.1f} ({v['median_cpu_p99_us']:.1f})"
                      for k, v in r.get("per_cpu", {}).items()) or "—"


def targets(report: dict) -> list[str]:
    """The per-token target, met or not, from this run's numbers: overall and per pinned CPU."""
    rows = [r for r in report["lexical"] if r["items"]]
    L = ["## Target: lexical stages ≤ 20 µs per token at p99",
         f"Guard modules: {report.get('native', 'source')}. Best CPU p99 over all repetitions (median "
         "repetition in brackets): " + ", ".join(f"{r['cpu_p99_us']:.1f} ({r['median_cpu_p99_us']:.1f}) µs at "
                                                 f"{r['items']} items" for r in rows) + "."]
    cpus = sorted({k for r in rows for k in r.get("per_cpu", {})})
    for k in cpus or [None]:
        def p99(r: dict, best: bool = True) -> float:
            src = r if k is None else r["per_cpu"][k]
            return src["cpu_p99_us"] if best else src["median_cpu_p99_us"]
        missed = [r for r in rows if p99(r) > TARGET_P99_US]
        where = "" if k is None else f"Pinned to cpu{k}: "
        L.append(f"- {where}" + ("**met** at every size (best repetition)" if not missed else
                 "**missed** at " + ", ".join(f"{r['items']} items ({p99(r):.1f} µs, median repetition "
                                               f"{p99(r, False):.1f})" for r in missed)
                 + (", met at the other sizes" if len(missed) < len(rows) else "")) + ".")
    L += ["", "The p99 tokens are word ends whose grams match entries, and the same tokens are the slow "
          "ones in every repetition: mostly the token that ends a shared attribute value, such as "
          "\" for\" after \"now works as a thuxrandist\" (its char grams, the attribute's short entry, "
          "the entity stage's window). p99.9 shows the rarer slow pushes the p99 leaves out."]
    for r in rows:
        if "tail" in r:
            t = r["tail"]
            L.append(f"- {r['items']} items: the 10 slowest tokens cost {t['slowest_in_stream_us']:.1f} µs in the "
                     f"stream and {t['slowest_alone_us']:.1f} µs pushed alone with their data in cache "
                     f"({t['slowest_in_stream_us'] / t['slowest_alone_us']:.1f}x): the difference is cache "
                     "misses (under callgrind's cache model, most of them in the index's dict lookups).")
    base = report["lexical"][0].get("per_cpu", {})
    if len(base) > 1:
        spread = ", ".join(f"cpu{k} {v['cpu_p99_us']:.1f}" for k, v in base.items())
        L.append(f"- The two vCPUs differ with nothing forgotten at all (empty guard p99: {spread} µs), and "
                 "which one is slower changes between runs (host placement): the per-CPU numbers are "
                 "reported rather than folded into one, and a run-to-run spread of several µs at p99 is "
                 "normal on this machine.")
    L.append("")
    return L


def markdown(report: dict) -> str:
    L = [f"# Leakage guard benchmark\n\n{report['machine']}\n", *targets(report)]
    if "subject" in report:
        L += guard_subject.markdown(report["subject"], report["subject"]["command"])
    L += [
         "## Per-token overhead, lexical stages (exact + entity, default config: hidden-channel views on), µs per push",
         "Best of 5 repetitions per CPU, pinned to each in turn (median repetition's CPU p50 / p99 in "
         "brackets); the per-CPU column gives each CPU's best (median) p99.\n",
         "| forgotten items | forgets | cpu p50 | cpu p99 | cpu p99 per CPU | cpu p99.9 | wall p50 | wall p99 "
         "| spaced-letters cpu p99 | index MB | derive ms/forget | add ms/forget | ledger B/item "
         "| new session µs (200-word prompt) | load average |",
         "|" + "---|" * 15]
    mem = {m["items"]: m["index_mb"] for m in report["index_memory"]}
    for r in report["lexical"]:
        L.append(f"| {r['items']} {'(empty guard baseline)' if r['items'] == 0 else ''} | {r.get('forgets', 0)} "
                 f"| {r['cpu_p50_us']:.1f} ({r['median_cpu_p50_us']:.1f}) | {r['cpu_p99_us']:.1f} "
                 f"({r['median_cpu_p99_us']:.1f}) | {_per_cpu(r)} | {r['cpu_p999_us']:.1f} | {r['wall_p50_us']:.1f} "
                 f"| {r['wall_p99_us']:.1f} | {r.get('spaced_text_cpu_p99_us', 0):.1f} | {mem.get(r['items'], 0):.1f} "
                 f"| {r.get('derive_ms_per_forget', 0):.2f} | {r.get('add_ms_per_forget', 0):.2f} "
                 f"| {r.get('ledger_bytes_per_item', 0):.0f} | {r.get('session_us', 0):.0f} "
                 f"({r.get('session_with_200_word_prompt_us', 0):.0f}) | {r.get('load_average', 0):.1f} |")
    tails = [r for r in report["lexical"] if "tail" in r]
    if tails:
        L += ["", "### The p99 tokens: in the stream and alone",
              "Per-token cost = its minimum over 3 passes (unpinned). The 10 slowest tokens, then the same "
              "tokens pushed alone 30 times each after the same 30 tokens (their data in cache); medians.\n",
              "| forgotten items | p99 (per-token minimum) | 10 slowest, in the stream | the same, alone "
              "| examples (`|` = the token) |", "|---|---|---|---|---|"]
        for r in tails:
            t = r["tail"]
            ex = "; ".join(f"`{e}`" for e in t["examples"])
            L.append(f"| {r['items']} | {t['p99_us']:.1f} | {t['slowest_in_stream_us']:.1f} "
                     f"| {t['slowest_alone_us']:.1f} | {ex} |")
    if "semantic" in report:
        L += ["", "## Semantic stage, one sentence (batch 1, 1 thread)", "| runtime | p50 ms | p99 ms |",
              "|---|---|---|"]
        for k, v in report["semantic"].items():
            if isinstance(v, dict):
                L.append(f"| {k} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} |")
        L.append("\nNearest-row search (numpy matmul + argmax): " + ", ".join(
            f"{k.split('_')[1]} rows {v:.2f} ms" for k, v in report["semantic"].items() if k.startswith("search")))
    L += ["", "## Time to block (Forget → ack → the live stream's next push)",
          "| items already forgotten | semantic rows derived | forget→ack ms | ack→blocked µs | pushes | "
          "chars released after ack | blocked |", "|---|---|---|---|---|---|---|"]
    for r in report["time_to_block"]:
        L.append(f"| {r['items']} | {r['semantic']} | {r['forget_to_ack_ms']:.2f} | {r['ack_to_block_us']:.0f} "
                 f"| {r['pushes_to_block']} | {r['released_after_ack']} | {r['blocked']} |")
    if report.get("served_time_to_block"):
        L += ["", "## Time to block through the server (`lethe serve`, small demo model, worker off)",
              "A client streams a bio (greedy, ~5 ms a token); after its first chunk an operator Forgets the whole "
              "text over gRPC (ledger fsync, guard update, reply); the client then reads the stream to its end. "
              "`ack → stream end` is negative when the filtered end arrived before the Forget reply did (the guard "
              "is updated before the reply is sent); `blocked = late` means the stream ended unfiltered with the "
              "whole output, i.e. the server had generated all of it before the Forget took effect (its chunks "
              "can still reach a busy client after the ack).\n",
              "| stream | blocked | first chunk ms | Forget RPC ms | ack → stream end ms | chars arrived before ack "
              "| chars arrived after ack (upper bound on released after it) | chars of the whole output |",
              "|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(report["served_time_to_block"]):
            blocked = "late" if r.get("whole_before_forget") else r["blocked"]
            L.append(f"| {i + 1} | {blocked} | {r['first_chunk_ms']:.1f} | {r['forget_rpc_ms']:.1f} "
                     f"| {r['ack_to_stream_end_ms']:.1f} | {r['chars_before_ack']} | {r['chars_after_ack']} "
                     f"| {r['chars_whole']} |")
    if "encodings" in report:
        L += ["", "## Hidden-channel views (rot13 digests, leet view, escapes, decoded runs incl. offsets and "
                  "one level of nesting): per-token CPU µs, ~1000 items",
              "Same entries with `encodings` off and on; best of 3 (median repetition's p99 in brackets).\n",
              "| encodings | stream | cpu p50 | cpu p99 | cpu mean | digests in index |", "|---|---|---|---|---|---|"]
        for r in report["encodings"]:
            L.append(f"| {r['encodings']} | {r['stream']} | {r['cpu_p50_us']:.1f} | {r['cpu_p99_us']:.1f} "
                     f"({r['median_cpu_p99_us']:.1f}) | {r['cpu_mean_us']:.1f} | {r['records']} |")
    L += ["", "## False positives on other people's demo sentences vs recall on obfuscated copies",
          "`needs subject` = config.exact_needs_subject (name-free passage grams block only with the subject in "
          "context); false = the previous behaviour.\n",
          "| n | char_gram | needs subject | forgotten people | other people blocked | other bio sentences blocked "
          "| verbatim | spaced | punctuation | one word per line | base64 | base64 cut mid-group "
          "| base64 of base64 | hex pairs | url-encoded | rot13 | leetspeak |",
          "|" + "---|" * 17]
    for r in report["false_positives"]:
        L.append(f"| {r['n']} | {r['char_gram']} | {r['exact_needs_subject']} | {r['forgotten']} "
                 f"| {r['other_people_blocked']:.3f} | {r['other_bio_sentences_blocked']:.3f} "
                 f"| {r['verbatim_blocked']:.3f} | {r['spaced_blocked']:.3f} | {r['punctuation_blocked']:.3f} "
                 f"| {r['one word per line_blocked']:.3f} | {r['base64_blocked']:.3f} "
                 f"| {r['base64 cut mid-group_blocked']:.3f} | {r['base64 of base64_blocked']:.3f} "
                 f"| {r['hex pairs_blocked']:.3f} | {r['url-encoded_blocked']:.3f} | {r['rot13_blocked']:.3f} "
                 f"| {r['leetspeak_blocked']:.3f} |")
    if "calibration" in report:
        L += ["", "## Semantic threshold calibration (demo corpus: paraphrase probes vs other people's facts)",
              "| rows | embedder | pos min | pos p10 | neg p90 | neg max | separable | calibrated threshold "
              "| TPR / FPR at default " + str(GuardConfig().semantic_threshold) + " | AUC |", "|" + "---|" * 10]
        for r in report["calibration"]:
            L.append(f"| {r['rows']} | {r['embedder']} | {r['pos_min']:.3f} | {r['pos_p10']:.3f} | {r['neg_p90']:.3f} "
                     f"| {r['neg_max']:.3f} | {r['separable']} | {r['threshold']:.3f} "
                     f"| {r['tpr_at_default']:.3f} / {r['fpr_at_default']:.3f} | {r['auc']:.3f} |")
    L += ["", "## Blocked / passed matrix", "| case | expected | got | stage |", "|---|---|---|---|"]
    for r in report["matrix"]:
        L.append(f"| {r['case']} | {r['expected']} | {r['got']} | {r['stage']} |")
    return "\n".join(L) + "\n"


SECTIONS = ("lexical", "time_to_block", "served", "encodings", "false_positives", "semantic", "matrix", "subject")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000, 100000])
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--skip-semantic", action="store_true")
    ap.add_argument("--skip-served", action="store_true", help="no time-to-block through a real server")
    ap.add_argument("--model-cache", type=Path, default=Path(tempfile.gettempdir()) / "lethe-guard-onnx")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="rerun these; keep the rest from guard.json")
    ap.add_argument("--small", action="store_true", help="subject section on the small demo preset")
    ap.add_argument("--subject-rounds", type=int, default=3, help="Forgets per trained person, per arrival pattern")
    ap.add_argument("--resolution-sizes", type=int, nargs="+", default=[10, 1000, 10000], help="corpus people")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    cache = None if args.skip_semantic else args.model_cache
    run = set(args.only or SECTIONS) - ({"served"} if args.skip_served else set())
    report: dict = json.loads((RESULTS / "guard.json").read_text()) if args.only else {}
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"load average {os.getloadavg()[0]:.1f} at start, Python {platform.python_version()}")
    if run & {"lexical", "time_to_block", "encodings"} or not args.only:
        report["machine"], report["native"] = machine, native.STATUS
    if "lexical" in run:
        report["lexical"] = lexical(args.sizes, args.tokens)
        report["index_memory"] = index_memory(report["lexical"])
    if "time_to_block" in run:
        report["time_to_block"] = time_to_block(args.sizes, cache)
    if "served" in run:
        report["served_time_to_block"] = served_time_to_block()
    if "subject" in run:
        report["subject"] = guard_subject.measure(args.small, args.resolution_sizes, args.subject_rounds)
        report["subject"]["command"] = "python bench/guard.py " + " ".join(sys.argv[1:])
        report["subject"]["machine"] = f"{machine}, {os.getloadavg()[0]:.1f} at end"
    if "encodings" in run:
        report["encodings"] = encoding_overhead(args.tokens)
    if "false_positives" in run:
        report["false_positives"] = false_positive_table(
            [(8, 24, True), (8, 32, True), (8, 40, False), (8, 40, True), (12, 56, True)])
        report["false_positives"] += false_positive_table([(8, 40, False), (8, 40, True)], n_forgotten=2000)
    if cache is not None and "semantic" in run:
        report["semantic"] = semantic_latency(cache)
        report["calibration"] = calibration(cache)
    if "matrix" in run:
        report["matrix"] = matrix(cache)
    if not args.only:
        report["machine"] += f", {os.getloadavg()[0]:.1f} at end"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "guard.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "guard.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

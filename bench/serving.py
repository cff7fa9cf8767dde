"""Serving throughput: the Lethe server (gRPC and OpenAI HTTP) vs raw in-process `model.generate`.

Measures generated tokens per second for 1 stream and for N concurrent streams (fixed-length
generation via ignore_eos / min_new_tokens, so every side produces the same tokens), plus the
time to the first token. The server runs as its own process (`lethe serve`), as in production;
the baseline is plain `model.generate` in a process of its own too (see RawProcess). Both sides are pinned to the same CPU
set (the server inherits this process's affinity, as under `taskset`) with the same torch
thread count, and their rounds are interleaved — raw, gRPC and HTTP take turns within every
round, the order rotating — so a load change on a shared machine hits all alike. Reports the
median over rounds of each side's tokens/s, the median of the per-round served/raw ratios, and
CPU seconds per generated token on both sides (the server process's threads via
/proc/PID/task/*/schedstat, the raw process via `time.process_time`): on a busy machine that is the number to trust, tokens/s moves with the
neighbours. Prints the baseline beside the last committed figure so a ratio can only improve
by the server getting faster. Writes bench/results/serving.json and serving.md (serving-NAME.*
for a registered pretrained model, e.g. `--model smollm2` after `lethe model fetch smollm2`).

    python bench/serving.py [--model DIR|NAME | --small] [--tokens 128] [--concurrency 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.client import LetheClient  # noqa: E402
from server.runtime.model import load_model  # noqa: E402
from server.settings import load_settings  # noqa: E402
from tests.procs import ServeProcess  # noqa: E402
from unlearn_engine.demo.builder import default_demo_model  # noqa: E402
from unlearn_engine.pretrained import MODELS, resolve_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = ["Where was", "What does", "Who is the", "When was", "Tell me about", "The", "In", "What is the"]
SIDES = ("raw", "grpc", "http")


class RawGenerate:
    """The baseline: plain `model.generate`, greedy, fixed length, left-padded batch."""

    def __init__(self, model_dir: Path, tokens: int):
        self.loaded = load_model(model_dir)
        self.tokens = tokens

    def _inputs(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = [self.loaded.tokenizer(p).input_ids for p in prompts]
        width = max(map(len, enc))
        pad, dev = self.loaded.pad_id, self.loaded.device
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in enc], device=dev)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=dev)
        return ids, mask

    def run(self, prompts: list[str], tokens: int | None = None) -> int:
        tokens = tokens or self.tokens
        ids, mask = self._inputs(prompts)
        with torch.inference_mode():
            out = self.loaded.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens,
                                             min_new_tokens=tokens, do_sample=False, pad_token_id=self.loaded.pad_id)
        if self.loaded.device.type == "cuda":
            torch.cuda.synchronize()
        return (out.shape[1] - ids.shape[1]) * len(prompts)


def http_stream(port: int, prompt: str, tokens: int) -> int:
    """One streamed /v1/completions request; returns the completion tokens of its usage chunk."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"model": "bench", "prompt": prompt, "max_tokens": tokens, "ignore_eos": True,
                       "stream": True, "stream_options": {"include_usage": True}})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp, usage = conn.getresponse(), 0
    for line in resp:
        if line.startswith(b"data: {") and b'"usage":{' in line:
            usage = json.loads(line[6:])["usage"]["completion_tokens"]
    conn.close()
    return usage


def process_cpu_seconds(pid: int) -> float:
    """CPU time of all of a process's threads so far, in nanosecond resolution (Linux schedstat;
    /proc/PID/stat counts 10 ms ticks, too coarse for one 128-token round)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            pass
    return total / 1e9


class RawProcess:
    """RawGenerate in a child process of its own session, like the server: with the kernel's
    autogroup scheduling, a process in a new session gets its own CPU share on a shared machine,
    so a baseline in the bench's own session would be handicapped against the server."""

    def __init__(self, model_dir: Path, tokens: int, threads: int):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen([sys.executable, __file__, "--raw-worker", str(model_dir), str(tokens), str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)
        self.cpu_seconds = 0.0  # the child's CPU time for the runs so far

    def run(self, prompts: list[str], tokens: int | None = None) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"prompts": prompts, "tokens": tokens}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        self.cpu_seconds += answer["cpu"]
        return int(answer["produced"])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def raw_worker(model_dir: str, tokens: int, threads: int) -> int:
    """The child side of RawProcess: one JSON request per line in, one answer per line out."""
    torch.set_num_threads(threads)
    raw = RawGenerate(Path(model_dir), tokens)
    for line in sys.stdin:
        req = json.loads(line)
        cpu0 = time.process_time()
        produced = raw.run(req["prompts"], req["tokens"])
        print(json.dumps({"produced": produced, "cpu": time.process_time() - cpu0}), flush=True)
    return 0


def last_committed(stem: str, model_dir: Path, tokens: int) -> dict[str, float]:
    """workload -> raw tok/s in the committed results file (HEAD), to print beside today's; empty
    when that run measured another model or length."""
    try:
        text = subprocess.run(["git", "show", f"HEAD:bench/results/{stem}.json"], capture_output=True, text=True,
                              cwd=RESULTS.parent.parent, check=True).stdout
        old = json.loads(text)
        if Path(old["model"]).name != model_dir.name or old["tokens_per_request"] != tokens:
            return {}
        return {r["workload"]: r["raw_generate_tok_s"] for r in old["rows"]}
    except (subprocess.CalledProcessError, OSError, KeyError, ValueError):
        return {}


def measure(sides: dict[str, Callable[[list[str]], int]], cpu_of: dict[str, Callable[[], float]],
            workloads: dict[str, list[str]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """{workload: {"<side>_tok_s": [per round], "<side>_cpu_ms": [per round]}}, sides interleaved."""
    samples: dict[str, dict[str, list[float]]] = {w: {} for w in workloads}
    names = list(sides)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for workload, prompts in workloads.items():
            for side in order:
                cpu0, t0 = cpu_of[side](), time.perf_counter()
                produced = sides[side](prompts)
                seconds, cpu = time.perf_counter() - t0, cpu_of[side]() - cpu0
                samples[workload].setdefault(f"{side}_tok_s", []).append(produced / seconds)
                samples[workload].setdefault(f"{side}_cpu_ms", []).append(1000 * cpu / produced)
    return samples


def first_token_seconds(client: LetheClient, raw: RawProcess, rounds: int) -> dict[str, float]:
    """Median time to the first streamed token vs raw prefill + one decode step (generate, 2 tokens)."""
    served, baseline = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _chunk in client.stream(PROMPTS[0], max_new_tokens=8, ignore_eos=True):
            served.append(time.perf_counter() - t0)
            break
        t0 = time.perf_counter()
        raw.run(PROMPTS[:1], tokens=2)
        baseline.append(time.perf_counter() - t0)
    return {"served_ms": 1000 * statistics.median(served), "raw_prefill_plus_step_ms": 1000 * statistics.median(baseline)}


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--raw-worker":
        return raw_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory, or a fetched registry name (smollm2)")
    parser.add_argument("--small", action="store_true", help="use the small demo preset")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians need >= 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (1: two threads on a shared 2-core box thrash)")
    parser.add_argument("--cpus", help="CPU set for both sides, e.g. 0-1 (default: this process's affinity)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP side")
    parser.add_argument("--serve-args", default="", help="extra `lethe serve` flags, space separated")
    parser.add_argument("--out", help="result file stem (default serving, or serving-NAME for a registry model)")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be >= 3: the bench reports medians")
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for part in args.cpus.split(",") for c in (
            range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1))})
    cpus = sorted(os.sched_getaffinity(0))  # the server inherits it, as a child of `taskset`
    torch.set_num_threads(args.threads)
    cache_dir = load_settings(check=False).cache_dir
    model_dir = (resolve_model(args.model, cache_dir) if args.model
                 else default_demo_model(cache_dir, small=args.small))
    stem = args.out or (f"serving-{args.model}" if args.model in MODELS else "serving")
    committed = last_committed(stem, model_dir, args.tokens)
    load_before = os.getloadavg()[0]
    raw = RawProcess(model_dir, args.tokens, args.threads)
    raw.run(PROMPTS[:1])  # warm-up
    server = ServeProcess(model_dir, Path(tempfile.mkdtemp()), "--no-worker", "--max-batch-size", str(args.concurrency),
                          "--torch-threads", str(args.threads), "--monitor-interval-seconds", "0",
                          *args.serve_args.split(), http=not args.no_http)
    workloads = {"1 stream": PROMPTS[:1], f"{args.concurrency} concurrent": (PROMPTS * 4)[:args.concurrency]}
    try:
        server.wait_serving()
        pid = server.proc.pid
        with LetheClient(server.target, timeout=600) as client, ThreadPoolExecutor(args.concurrency) as pool:
            def grpc_one(prompt: str) -> int:
                chunks = list(client.stream(prompt, max_new_tokens=args.tokens, ignore_eos=True))
                return chunks[-1].usage.completion_tokens

            sides: dict[str, Callable[[list[str]], int]] = {
                "raw": raw.run,
                "grpc": lambda prompts: sum(pool.map(grpc_one, prompts))}
            cpu_of: dict[str, Callable[[], float]] = {"raw": lambda: raw.cpu_seconds, "grpc": lambda: process_cpu_seconds(pid)}
            if not args.no_http:
                assert server.http_port is not None
                port = server.http_port
                sides["http"] = lambda prompts: sum(pool.map(lambda p: http_stream(port, p, args.tokens), prompts))
                cpu_of["http"] = cpu_of["grpc"]
            for side in list(sides)[1:]:
                sides[side](PROMPTS[:1])  # warm-up
            samples = measure(sides, cpu_of, workloads, args.rounds)
            ttft = first_token_seconds(client, raw, args.rounds)
    finally:
        server.kill()
        raw.close()
    med = {w: {k: statistics.median(v) for k, v in s.items()} for w, s in samples.items()}
    rows = []
    for w, m in med.items():
        row = {"workload": w, "raw_generate_tok_s": round(m["raw_tok_s"], 1),
               "raw_committed_tok_s": committed.get(w),
               "lethe_tok_s": round(m["grpc_tok_s"], 1),
               "ratio": round(statistics.median(g / r for g, r in zip(samples[w]["grpc_tok_s"], samples[w]["raw_tok_s"])), 3),
               "raw_cpu_ms_per_token": round(m["raw_cpu_ms"], 3),
               "server_cpu_ms_per_token_grpc": round(m["grpc_cpu_ms"], 3),
               "per_round_tok_s": {k: [round(x, 1) for x in v] for k, v in samples[w].items() if k.endswith("tok_s")}}
        if "http_tok_s" in m:
            row.update(lethe_http_tok_s=round(m["http_tok_s"], 1),
                       http_ratio=round(statistics.median(
                           h / r for h, r in zip(samples[w]["http_tok_s"], samples[w]["raw_tok_s"])), 3),
                       server_cpu_ms_per_token_http=round(m["http_cpu_ms"], 3))
        rows.append(row)
    report = {"model": str(model_dir), "tokens_per_request": args.tokens, "rounds": args.rounds,
              "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": args.threads,
              "cpus": cpus, "cpu_count": os.cpu_count(), "platform": platform.platform(),
              "serve_args": args.serve_args, "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "time_to_first_token": {k: round(v, 2) for k, v in ttft.items()}, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"Model `{model_dir.name}`, {args.tokens} tokens per request, median of {args.rounds} interleaved rounds, "
             f"torch threads {args.threads}, CPUs {cpus}, load {report['load_average_1min']}.", "",
             "| workload | raw generate tok/s (committed) | Lethe gRPC tok/s | gRPC / raw | Lethe HTTP tok/s | HTTP / raw "
             "| CPU ms/token raw | server CPU ms/token gRPC | HTTP |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['workload']} | {r['raw_generate_tok_s']} ({r['raw_committed_tok_s']}) | {r['lethe_tok_s']} | "
              f"{r['ratio']} | {r.get('lethe_http_tok_s', '-')} | {r.get('http_ratio', '-')} | "
              f"{r['raw_cpu_ms_per_token']} | {r['server_cpu_ms_per_token_grpc']} | "
              f"{r.get('server_cpu_ms_per_token_http', '-')} |" for r in rows]
    lines += ["", f"Time to first token, 1 stream: served {report['time_to_first_token']['served_ms']} ms, raw prefill "
              f"+ one step {report['time_to_first_token']['raw_prefill_plus_step_ms']} ms."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

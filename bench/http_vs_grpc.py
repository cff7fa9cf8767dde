"""HTTP vs gRPC streaming throughput on one `lethe serve` (issue 18: HTTP >= 0.9x gRPC, 1 and 8 streams).

One server process (`--no-worker`), both fronts on, the same prompts and fixed-length generation
(ignore_eos) on both: gRPC `GenerateStream` through the Python client (one channel, as an
application keeps), HTTP `/v1/completions` Server-Sent Events read with http.client over one
keep-alive connection per client thread (as the openai client's pool keeps them). The protocols
run in pairs of rounds, back to back, the order flipping each pair; each pair gives one HTTP/gRPC
ratio of tokens per second (a round is 8 requests: 8 at once, or 1 stream 8 times in a row, so
it lasts long enough to average over scheduler noise), and the figure is the median ratio over pairs: on a shared machine a
load change hits the two halves of a pair alike far more than it hits the run's totals. The
server's CPU seconds per generated token are reported per protocol too (what the protocol costs,
whatever else runs). Compares protocols only; bench/serving.py compares the server with raw
`model.generate`. Writes bench/results/http_vs_grpc.json and .md.

    python bench/http_vs_grpc.py [--small] [--tokens 128] [--concurrency 8] [--pairs 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.serving import PROMPTS, process_cpu_seconds  # noqa: E402
from server.client import LetheClient  # noqa: E402
from tests.procs import ServeProcess  # noqa: E402
from unlearn_engine.demo.builder import default_demo_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.9


class HttpStreams:
    """Streamed completions over one keep-alive connection per calling thread."""

    def __init__(self, port: int, tokens: int):
        self.port, self.tokens = port, tokens
        self._local = threading.local()

    def __call__(self, prompt: str) -> int:
        body = json.dumps({"model": "bench", "prompt": prompt, "max_tokens": self.tokens, "ignore_eos": True,
                           "stream": True, "stream_options": {"include_usage": True}})
        conn = getattr(self._local, "conn", None)
        try:
            if conn is None:
                raise ConnectionError("no connection yet")
            conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
        except (ConnectionError, http.client.HTTPException):  # none yet, or the server closed it idle (5 s)
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
        usage = 0
        for line in resp:
            if line.startswith(b"data: {") and b'"usage":{' in line:
                usage = json.loads(line[6:])["usage"]["completion_tokens"]
        return usage


def measure(server: ServeProcess, tokens: int, streams: int, pairs: int) -> dict:
    assert server.http_port is not None
    with LetheClient(server.target, timeout=600) as client, ThreadPoolExecutor(streams) as pool:
        def grpc_one(prompt: str) -> int:
            return list(client.stream(prompt, max_new_tokens=tokens, ignore_eos=True))[-1].usage.completion_tokens

        http_one = HttpStreams(server.http_port, tokens)
        prompts = (PROMPTS * 4)[:streams] * max(1, 8 // streams)  # 8 requests a round, `streams` at a time
        for one in (grpc_one, http_one):  # warm-up: connections, first-request costs
            list(pool.map(one, prompts))
        rounds = []
        for i in range(pairs):
            order = [("grpc", grpc_one), ("http", http_one)]
            pair = {}
            for proto, one in order if i % 2 == 0 else order[::-1]:
                start, cpu = time.perf_counter(), process_cpu_seconds(server.proc.pid)
                produced = sum(pool.map(one, prompts))
                seconds = time.perf_counter() - start
                pair[proto] = {"tok_s": produced / seconds,
                               "cpu_ms": 1000 * (process_cpu_seconds(server.proc.pid) - cpu) / produced}
            pair["ratio"] = pair["http"]["tok_s"] / pair["grpc"]["tok_s"]
            rounds.append(pair)
    med = lambda key, proto: statistics.median(r[proto][key] for r in rounds)  # noqa: E731
    return {"streams": streams, "pairs": pairs, "ratio_median": statistics.median(r["ratio"] for r in rounds),
            "ratio_min": min(r["ratio"] for r in rounds), "ratio_max": max(r["ratio"] for r in rounds),
            "grpc_tok_s": med("tok_s", "grpc"), "http_tok_s": med("tok_s", "http"),
            "grpc_cpu_ms_per_token": med("cpu_ms", "grpc"), "http_cpu_ms_per_token": med("cpu_ms", "http"),
            "rounds": rounds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="the small demo preset (default: the full one)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    args = ap.parse_args()
    model = default_demo_model(Path("~/.cache/lethe").expanduser(), small=args.small)
    load_start = os.getloadavg()[0]
    server = ServeProcess(model, Path(tempfile.mkdtemp(prefix="lethe-http-bench-")), "--no-worker",
                          "--max-batch-size", str(args.concurrency), "--torch-threads", str(args.threads),
                          "--monitor-interval-seconds", "0", http=True)
    try:
        server.wait_serving()
        rows = [measure(server, args.tokens, n, args.pairs) for n in (1, args.concurrency)]
    finally:
        server.kill()
    command = "python bench/http_vs_grpc.py " + " ".join(sys.argv[1:])
    report = {"command": command.strip(), "model": model.name, "tokens": args.tokens,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)], "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "http_vs_grpc.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# HTTP vs gRPC streaming throughput (issue 18)", "",
             f"`{report['command']}` — model `{model.name}`, {args.tokens} tokens per request, server torch threads "
             f"{args.threads}; {report['machine']}, load average {report['load_average'][0]} at start, "
             f"{report['load_average'][1]} at end.", "",
             f"Target: HTTP ≥ {TARGET}x gRPC tokens/s. Ratio = median over pairs of back-to-back rounds "
             "(min–max beside it); tok/s and server CPU per token are medians over rounds.", "",
             "| streams | HTTP / gRPC (median) | min–max | gRPC tok/s | HTTP tok/s | server CPU ms/token gRPC | HTTP "
             "| target |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "met" if r["ratio_median"] >= TARGET else "**missed**"
        lines.append(f"| {r['streams']} | {r['ratio_median']:.3f} | {r['ratio_min']:.2f}–{r['ratio_max']:.2f} "
                     f"| {r['grpc_tok_s']:.1f} | {r['http_tok_s']:.1f} | {r['grpc_cpu_ms_per_token']:.3f} "
                     f"| {r['http_cpu_ms_per_token']:.3f} | {met} |")
    (RESULTS / "http_vs_grpc.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

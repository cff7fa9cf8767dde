"""Serving throughput: the Lethe server (gRPC and OpenAI HTTP) vs raw in-process `model.generate`.

Measures generated tokens per second for 1 stream and for N concurrent streams (fixed-length
generation via ignore_eos so every side produces the same number of tokens). The server runs as
its own process (`lethe serve`), as in production; the baseline runs in this process with the
same torch thread count. gRPC streams (GenerateStream) and HTTP streams (SSE from
/v1/completions, read with http.client so client-side parsing costs about what protobuf does)
hit the same server, round by round in turn (the order flipping each round), so a load change on
the machine hits both alike; the server process's CPU seconds per generated token are recorded
per protocol too, a measure of protocol overhead that other load on a shared machine barely
moves. Writes bench/results/serving.json and serving.md (serving-NAME.* for a
registered pretrained model, e.g. `--model smollm2` after `lethe model fetch smollm2`).

    python bench/serving.py [--model DIR|NAME | --small] [--tokens 128] [--concurrency 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def baseline(model_dir: Path, tokens: int, concurrency: int, rounds: int) -> dict[str, float]:
    loaded = load_model(model_dir)
    tok, model = loaded.tokenizer, loaded.model

    def run(batch: list[str]) -> int:
        enc = [tok(p).input_ids for p in batch]
        width = max(map(len, enc))
        ids = torch.tensor([[loaded.pad_id] * (width - len(e)) + e for e in enc], device=loaded.device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc], device=loaded.device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                                 do_sample=False, pad_token_id=loaded.pad_id)
        return (out.shape[1] - width) * len(batch)

    run(PROMPTS[:1])  # warm-up
    result = {}
    for name, batch in (("1 stream", PROMPTS[:1]), (f"{concurrency} concurrent", (PROMPTS * 4)[:concurrency])):
        start, produced = time.perf_counter(), 0
        for _ in range(rounds):
            produced += run(batch)
        result[name] = produced / (time.perf_counter() - start)
    return result


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
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(target: str, http_port: int, server_pid: int, tokens: int, concurrency: int, rounds: int
           ) -> dict[str, dict[str, float]]:
    """{workload: {"grpc": tok/s, "http": tok/s, "grpc_cpu_ms": server CPU ms per token, "http_cpu_ms"}},
    the two protocols timed round by round in turn."""
    with LetheClient(target, timeout=600) as client:
        client.generate("Where was", max_new_tokens=tokens, ignore_eos=True)  # warm-up
        http_stream(http_port, "Where was", tokens)

        def grpc_one(prompt: str) -> int:
            chunks = list(client.stream(prompt, max_new_tokens=tokens, ignore_eos=True))
            return chunks[-1].usage.completion_tokens

        def http_one(prompt: str) -> int:
            return http_stream(http_port, prompt, tokens)

        result: dict[str, dict[str, float]] = {}
        for name, n in (("1 stream", 1), (f"{concurrency} concurrent", concurrency)):
            seconds, produced, cpu = {"grpc": 0.0, "http": 0.0}, {"grpc": 0, "http": 0}, {"grpc": 0.0, "http": 0.0}
            with ThreadPoolExecutor(n) as pool:
                for r in range(rounds):
                    order = (("grpc", grpc_one), ("http", http_one))
                    for proto, one in order if r % 2 == 0 else order[::-1]:
                        start, cpu_start = time.perf_counter(), process_cpu_seconds(server_pid)
                        produced[proto] += sum(pool.map(one, (PROMPTS * 4)[:n]))
                        seconds[proto] += time.perf_counter() - start
                        cpu[proto] += process_cpu_seconds(server_pid) - cpu_start
            result[name] = {**{p: produced[p] / seconds[p] for p in seconds},
                            **{f"{p}_cpu_ms": 1000 * cpu[p] / produced[p] for p in cpu}}
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory, or a fetched registry name (smollm2)")
    parser.add_argument("--small", action="store_true", help="use the small demo preset")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (1: two threads on a shared 2-core box thrash)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache_dir = load_settings(check=False).cache_dir
    model_dir = (resolve_model(args.model, cache_dir) if args.model
                 else default_demo_model(cache_dir, small=args.small))
    stem = f"serving-{args.model}" if args.model in MODELS else "serving"
    load_before = os.getloadavg()[0]  # a shared machine's other work moves tok/s; CPU per token barely
    raw = baseline(model_dir, args.tokens, args.concurrency, args.rounds)
    import tempfile

    server = ServeProcess(model_dir, Path(tempfile.mkdtemp()), "--no-worker", "--max-batch-size", str(args.concurrency),
                          "--torch-threads", str(torch.get_num_threads()), "--monitor-interval-seconds", "0",
                          http=True)
    try:
        server.wait_serving()
        assert server.http_port is not None
        srv = served(server.target, server.http_port, server.proc.pid, args.tokens, args.concurrency, args.rounds)
    finally:
        server.kill()
    rows = [{"workload": k, "raw_generate_tok_s": round(raw[k], 1), "lethe_tok_s": round(srv[k]["grpc"], 1),
             "ratio": round(srv[k]["grpc"] / raw[k], 3), "lethe_http_tok_s": round(srv[k]["http"], 1),
             "http_vs_grpc": round(srv[k]["http"] / srv[k]["grpc"], 3),
             "server_cpu_ms_per_token_grpc": round(srv[k]["grpc_cpu_ms"], 3),
             "server_cpu_ms_per_token_http": round(srv[k]["http_cpu_ms"], 3)} for k in raw]
    report = {"model": str(model_dir), "tokens_per_request": args.tokens, "rounds": args.rounds,
              "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "platform": platform.platform(),
              "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| workload | raw model.generate tok/s | Lethe gRPC tok/s | ratio | Lethe HTTP tok/s | HTTP / gRPC "
             "| server CPU ms/token gRPC | HTTP |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['workload']} | {r['raw_generate_tok_s']} | {r['lethe_tok_s']} | {r['ratio']} | "
              f"{r['lethe_http_tok_s']} | {r['http_vs_grpc']} | {r['server_cpu_ms_per_token_grpc']} | "
              f"{r['server_cpu_ms_per_token_http']} |" for r in rows]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

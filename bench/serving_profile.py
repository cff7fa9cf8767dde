"""Where a served token's time goes: a per-step timeline of `lethe serve` and a py-spy profile.

Starts the server as its own process (as in production) with the scheduler instrumented in that
process: every decode step records its start, the end of its forward pass and its end on
CLOCK_MONOTONIC, which is system-wide on Linux, so the client's arrival time of each token is on
the same clock. Reports, per workload (1 stream, N concurrent): the step's wall time, the forward
pass's share of it, the gap between steps (time the decode thread waits for the GIL or for work),
and the latency from a step's end to the client holding the token. Optionally samples the
server with py-spy (`--py-spy`; needs ptrace) and the raw `model.generate` side the same way,
and summarises the top frames per thread. Writes bench/results/serving_profile.json and .md.
Does not compare throughput against a baseline: bench/serving.py does that.

    python bench/serving_profile.py [--small] [--tokens 128] [--concurrency 8] [--py-spy]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = ["Where was", "What does", "Who is the", "When was", "Tell me about", "The", "In", "What is the"]


# ---- the server side: `python bench/serving_profile.py --serve-child OUT serve ...` ---------------
def serve_child(out: Path, switch_interval: float, argv: list[str]) -> int:
    """Run `lethe serve` with the decode steps timed; SIGUSR1 dumps the records to `out`.
    switch_interval > 0 sets the GIL switch interval (an experiment: does the decode thread wait
    for the GIL behind the event loop and gRPC threads? CPython's default is 5 ms)."""
    from server import cli

    if switch_interval > 0:
        sys.setswitchinterval(switch_interval)
    from server.runtime import scheduler as sched

    steps: list[tuple[float, float, float, int]] = []  # (start, forward end, end, rows)
    forward_end = [0.0]
    orig_forward, orig_decode, orig_prefill = (sched.BatchScheduler._forward, sched.BatchScheduler._decode_step,
                                               sched.BatchScheduler._prefill)

    def timed_forward(self, *a, **kw):
        result = orig_forward(self, *a, **kw)
        forward_end[0] = time.monotonic()
        return result

    def timed(orig, kind):
        def step(self, *a, **kw):
            start = time.monotonic()
            rows = len(self._rows)
            orig(self, *a, **kw)
            steps.append((start, forward_end[0], time.monotonic(), rows if kind == "decode" else -1))
        return step

    sched.BatchScheduler._forward = timed_forward
    sched.BatchScheduler._decode_step = timed(orig_decode, "decode")
    sched.BatchScheduler._prefill = timed(orig_prefill, "prefill")
    signal.signal(signal.SIGUSR1, lambda *_: (out.write_text(json.dumps(steps)), steps.clear()))
    return cli.main(argv)


# ---- the client side ------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def timeline(server, dump: Path, tokens: int, n: int) -> dict[str, float]:
    """Run n concurrent fixed-length streams; match each client arrival to the step that made it."""
    from bench.serving import process_cpu_seconds
    from server.client import LetheClient

    with LetheClient(server.target, timeout=600) as client:
        client.generate("Where was", max_new_tokens=8)  # warm-up
        os.kill(server.proc.pid, signal.SIGUSR1)  # clear the warm-up's records
        _wait_file(dump)
        dump.unlink()

        def one(prompt: str) -> list[float]:
            arrivals = []
            for _ in client.stream(prompt, max_new_tokens=tokens, ignore_eos=True):
                arrivals.append(time.monotonic())
            return arrivals

        cpu0, t0 = process_cpu_seconds(server.proc.pid), time.monotonic()
        with ThreadPoolExecutor(n) as pool:
            arrivals = list(pool.map(one, (PROMPTS * 4)[:n]))
        wall, cpu = time.monotonic() - t0, process_cpu_seconds(server.proc.pid) - cpu0
    os.kill(server.proc.pid, signal.SIGUSR1)
    steps = json.loads(_wait_file(dump))
    dump.unlink()
    decode = [s for s in steps if s[3] >= 0]
    ends = sorted(s[2] for s in steps)
    # a chunk's latency: its arrival minus the end of the latest step that ended before it
    import bisect

    lat = []
    for per_stream in arrivals:
        for t in per_stream[:-1]:  # the last message is the finish
            i = bisect.bisect_right(ends, t) - 1
            if i >= 0:
                lat.append(t - ends[i])
    gaps = [b[0] - a[2] for a, b in zip(decode, decode[1:])]
    produced = tokens * n
    return {
        "streams": n, "tokens": produced, "wall_s": round(wall, 3), "tok_s": round(produced / wall, 1),
        "server_cpu_ms_per_token": round(1000 * cpu / produced, 3),
        "decode_steps": len(decode),
        "step_ms_p50": round(1000 * statistics.median(s[2] - s[0] for s in decode), 3),
        "forward_ms_p50": round(1000 * statistics.median(s[1] - s[0] for s in decode), 3),
        "after_forward_ms_p50": round(1000 * statistics.median(s[2] - s[1] for s in decode), 3),
        "gap_between_steps_ms_p50": round(1000 * statistics.median(gaps), 3) if gaps else None,
        "gap_between_steps_ms_p90": round(1000 * _pct(gaps, 0.9), 3) if gaps else None,
        "step_end_to_client_ms_p50": round(1000 * statistics.median(lat), 3) if lat else None,
        "step_end_to_client_ms_p90": round(1000 * _pct(lat, 0.9), 3) if lat else None,
        "messages_per_stream": round(statistics.mean(len(a) for a in arrivals), 1),
        "step_share_of_wall": round(sum(s[2] - s[0] for s in steps) / wall, 3),
    }


def _wait_file(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text:
                return text
        time.sleep(0.02)  # polling a file another process writes: no condition to wait on
    raise TimeoutError(f"{path} never appeared")


# ---- py-spy -----------------------------------------------------------------------------------
def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
                             "--format", "raw", "--threads", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# A sample belongs to the first of these found walking its stack from the root down.
CATEGORIES = (
    ("idle wait", ("EpollSelector.select", "Condition.wait")),
    ("sampling", ("choose_tokens",)),
    ("detokenize", ("IncrementalText.",)),
    ("emit to loop", ("Handle.emit",)),
    ("kv join/leave", ("kv_batch.py",)),
    ("metrics", ("observer", "_report", "SchedulerMetrics", "prometheus_client")),
    ("guard", ("filter_off_loop", "GuardedGenerator._filter", "GuardSession")),
    ("model forward", ("BatchScheduler._forward", "Module._call_impl")),
    ("generate loop", ("GenerationMixin.",)),
    ("grpc / protobuf", ("GenerateStream", "_poll_wrapper", "grpc", "_chunks")),
    ("asyncio", ("asyncio", "BaseEventLoop", "_run_once")),
)


def _category(frames: list[str]) -> str:
    for name, needles in CATEGORIES:
        if any(n in f for f in frames for n in needles):
            return name
    return "other"


def summarise(raw: Path, top: int = 8) -> dict[str, object]:
    """Collapsed stacks -> per busy thread: samples, share per category (CATEGORIES) and the
    leaf frames holding the most samples (self time)."""
    cats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    leaves: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    totals: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        thread, n = frames[0], int(count)
        if len(frames) < 2 or "importlib" in stack:  # start-up imports are not serving
            continue
        totals[thread] += n
        cats[thread][_category(frames[1:])] += n
        leaves[thread][frames[-1]] += n
    out = {}
    for thread, total in totals.most_common(4):
        out[thread] = {"samples": total,
                       "categories": {c: round(k / total, 3) for c, k in cats[thread].most_common()},
                       "self": [(f, round(c / total, 3)) for f, c in leaves[thread].most_common(top)]}
    return out


def raw_generate_child(model_dir: str, tokens: int, n: int, repeats: int) -> int:
    import torch

    from server.runtime.model import load_model

    torch.set_num_threads(1)
    loaded = load_model(Path(model_dir))
    tok = loaded.tokenizer
    enc = [tok(p).input_ids for p in (PROMPTS * 4)[:n]]
    width = max(map(len, enc))
    ids = torch.tensor([[loaded.pad_id] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    with torch.inference_mode():
        for _ in range(repeats):
            loaded.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                                  do_sample=False, pad_token_id=loaded.pad_id)
    return 0


def main() -> int:
    if len(sys.argv) > 3 and sys.argv[1] == "--serve-child":
        return serve_child(Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4:])
    if len(sys.argv) > 2 and sys.argv[1] == "--raw-child":
        return raw_generate_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the small demo preset")
    parser.add_argument("--model", type=Path, help="a model directory instead of the demo model")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--py-spy", action="store_true", help="also sample both sides with py-spy (needs ptrace)")
    parser.add_argument("--extra", default="", help="extra `lethe serve` flags, space separated")
    parser.add_argument("--name", default="", help="suffix for the result files")
    parser.add_argument("--switch-interval", type=float, default=0.0,
                        help="the server's GIL switch interval in seconds (default: CPython's 5 ms)")
    args = parser.parse_args()

    from server.settings import load_settings
    from tests import procs
    from unlearn_engine.demo.builder import default_demo_model

    model_dir = args.model or default_demo_model(load_settings(check=False).cache_dir, small=args.small)
    work = Path(tempfile.mkdtemp())
    dump = work / "steps.json"
    procs.LETHE = [sys.executable, str(Path(__file__).resolve()), "--serve-child", str(dump),
                   str(args.switch_interval)]
    server = procs.ServeProcess(model_dir, work / "data", "--no-worker", "--max-batch-size", str(args.concurrency),
                                "--torch-threads", "1", "--monitor-interval-seconds", "0", *args.extra.split())
    report: dict[str, object] = {"model": model_dir.name, "small": args.small, "tokens_per_stream": args.tokens,
                                 "extra_flags": args.extra, "switch_interval": args.switch_interval, "load_average_1min": round(os.getloadavg()[0], 2)}
    try:
        server.wait_serving()
        for n in (1, args.concurrency):
            report[f"timeline_{n}"] = timeline(server, dump, args.tokens, n)
            print(json.dumps(report[f"timeline_{n}"]), flush=True)
        if args.py_spy:
            for n in (1, args.concurrency):
                out = work / f"served_{n}.txt"
                spy = py_spy(server.proc.pid, 12, out)
                time.sleep(0.5)  # let py-spy attach before the load starts
                deadline = time.monotonic() + 11
                while time.monotonic() < deadline:
                    timeline(server, dump, args.tokens, n)
                spy.wait()
                report[f"py_spy_served_{n}"] = summarise(out) if out.exists() else spy.stderr.read().decode()[-500:]
    finally:
        server.kill()
    if args.py_spy:
        for n in (1, args.concurrency):
            out = work / f"raw_{n}.txt"
            exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            subprocess.run([exe, "record", "--rate", "250", "--format", "raw", "--threads", "-o", str(out), "--",
                            sys.executable, str(Path(__file__).resolve()), "--raw-child", str(model_dir),
                            str(args.tokens), str(n), "6" if n == 1 else "3"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            report[f"py_spy_raw_{n}"] = summarise(out) if out.exists() else "py-spy failed"
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "serving_profile" + (f"_{args.name}" if args.name else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

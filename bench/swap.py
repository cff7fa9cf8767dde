"""Hot-swap benchmark: adapter-stack swaps under concurrent streaming, and Forget-to-ACTIVE timing.

Part 1 (swap mechanics). A real `lethe serve` process (no worker) serves the demo model to
`--streams` clients that stream fixed-length generations without pause. The benchmark plays the
worker: for each of `--swaps / 2` Forget requests it claims the job from the ledger, writes a
LoRA artifact with random weights (training 10 adapters would take many minutes and does not
change what a swap does: same artifact format, checksum verification, load, stack build and
switch between decode steps) and records it; the server swaps each in. Then it deactivates
them one by one over gRPC: `--swaps` swaps in all, `--spacing` seconds apart. Reported: failed
requests (must be 0), the median gap between streamed chunks, and — in the same run — the gaps
within 0.5 s of a swap against the gaps elsewhere (p50/p90/p99, each p99 with a bootstrap 90 %
interval, so "equal within noise" can be read off), the largest gap in each, plus the server's
own swap-pause histogram. A swap's time is when the streams first receive a chunk of the new
version (the bench does not poll the server, which would load it only near swaps).

Part 2 (`--real-forget`, default on). A server *with* its worker forgets one demo person while
the same streams run; reported: Forget-to-ACTIVE split into queue / train / verify / swap (the
server's `lethe_forget_stage_seconds`), and failed requests.

Writes bench/results/swap.{json,md}. Usage:
    python bench/swap.py                      # full demo model, 8 streams, 20 swaps
    python bench/swap.py --small --no-real-forget
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import torch
from peft import LoraConfig, get_peft_model
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.api import admin_pb2 as apb  # noqa: E402
from server.api import inference_pb2 as ipb  # noqa: E402
from server.client import LetheClient  # noqa: E402
from server.forget.jobs import ForgetState  # noqa: E402
from server.forget.ledger import SqliteLedger  # noqa: E402
from server.forget.layout import DataDir  # noqa: E402
from server.forget.worker import adapter_record  # noqa: E402
from tests.procs import ServeProcess  # noqa: E402
from unlearn_engine.artifacts import adapter_name_for, load_artifact, model_fingerprint, save_artifact  # noqa: E402
from unlearn_engine.demo.builder import default_demo_model, load_corpus  # noqa: E402
from unlearn_engine.trainer import load_base  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = ["Where was", "The phone number of", "In the year", "Tell me about", "Her favourite book is",
           "He works as", "The city of", "My name is"]
WINDOW_S = 0.5  # a gap counts as "during a swap" if it overlaps [swap - W, swap + W]


class Streams:
    """N clients streaming back to back; every chunk's arrival time and stack version is kept."""

    def __init__(self, target: str, n: int, tokens: int):
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.gaps: list[tuple[float, float]] = []  # (start, end) between chunks of one request
        self.versions: set[int] = set()
        self.first_seen: dict[int, float] = {}  # stack version -> first chunk of it (perf_counter)
        self.requests = 0
        self._lock = threading.Lock()
        self._seen = threading.Condition(self._lock)
        self._threads = [threading.Thread(target=self._run, args=(target, i, tokens), daemon=True)
                         for i in range(n)]
        for t in self._threads:
            t.start()

    def _run(self, target: str, i: int, tokens: int) -> None:
        with LetheClient(target, timeout=300) as c:
            while not self.stop.is_set():
                last, gaps, versions = None, [], set()
                try:
                    for chunk in c.stream(PROMPTS[i % len(PROMPTS)], max_new_tokens=tokens, ignore_eos=True):
                        now = time.perf_counter()
                        if last is not None:
                            gaps.append((last, now))
                        last = now
                        versions.add(chunk.stack_version)
                        if chunk.stack_version not in self.first_seen:
                            with self._seen:
                                self.first_seen.setdefault(chunk.stack_version, now)
                                self._seen.notify_all()
                        if chunk.finish_reason == ipb.FINISH_REASON_ERROR:
                            raise RuntimeError("finish_reason=error")
                except (grpc.RpcError, RuntimeError) as exc:
                    with self._lock:
                        self.errors.append(repr(exc)[:200])
                with self._lock:
                    self.gaps += gaps
                    self.versions |= versions
                    self.requests += 1

    def wait_version(self, version: int, timeout: float = 120) -> float:
        """When a chunk of stack `version` (or a later one) first arrived."""
        with self._seen:
            if not self._seen.wait_for(lambda: any(v >= version for v in self.first_seen), timeout):
                raise TimeoutError(f"stack version {version} never went live")
            return min(t for v, t in self.first_seen.items() if v >= version)

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(120)


def random_artifact(model_dir: Path, store: Path, forget_id: str, seed: int) -> Path:
    """A LoRA adapter with small random weights, saved like the worker saves a trained one."""
    model, _ = load_base(model_dir)
    torch.manual_seed(seed)
    name = adapter_name_for(forget_id)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                            init_lora_weights=False), adapter_name=name)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.mul_(0.01)
    art = save_artifact(peft, name, store / name, forget_id=forget_id, method="random",
                        config={"lora_rank": 8}, base_fingerprint=model_fingerprint(model_dir))
    return art.path


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body) for s in f.samples}


def _pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) >= 2 else (values or [0.0])[0]


def _p99_interval(values: list[float], rounds: int = 200) -> tuple[float, float]:
    """A bootstrap 90 % interval of the p99 (resampling the gaps; seeded, so reruns agree)."""
    rng = random.Random(0)
    p99s = sorted(_pct(rng.choices(values, k=len(values)), 99) for _ in range(rounds))
    return p99s[rounds // 20], p99s[-rounds // 20 - 1]


def gap_stats(streams: Streams, swap_times: list[float]) -> dict[str, float]:
    durations = [b - a for a, b in streams.gaps]

    def near_swap(a: float, b: float) -> bool:
        return any(a <= t + WINDOW_S and b >= t - WINDOW_S for t in swap_times)

    near = [b - a for a, b in streams.gaps if near_swap(a, b)]
    far = [b - a for a, b in streams.gaps if not near_swap(a, b)]
    per_swap = [1e3 * max((b - a for a, b in streams.gaps if a <= t + WINDOW_S and b >= t - WINDOW_S), default=0.0)
                for t in swap_times]
    median = statistics.median(durations)
    out: dict = {"chunks_gaps": len(durations), "median_gap_ms": 1e3 * median, "p99_gap_ms": 1e3 * _pct(durations, 99),
                 "max_gap_during_swaps_ms": 1e3 * max(near, default=0.0),
                 "max_gap_elsewhere_ms": 1e3 * max(far, default=0.0),
                 "max_gap_during_swaps_over_median": max(near, default=0.0) / median,
                 "max_gap_per_swap_ms": [round(g, 1) for g in per_swap]}
    for name, gaps in (("near", near), ("far", far)):
        out[f"{name}_gaps"] = len(gaps)
        for p in (50, 90, 99):
            out[f"{name}_p{p}_ms"] = 1e3 * _pct(gaps, p)
        lo, hi = _p99_interval(gaps) if len(gaps) >= 2 else (0.0, 0.0)
        out[f"{name}_p99_interval_ms"] = [round(1e3 * lo, 1), round(1e3 * hi, 1)]
    return out


def part_swaps(model_dir: Path, n_streams: int, n_swaps: int, tokens: int, spacing: float) -> dict:
    data = Path(tempfile.mkdtemp(prefix="lethe-swap-"))
    common = ("--torch-threads", "1", "--max-batch-size", str(n_streams + 1), "--monitor-interval-seconds", "0",
              "--worker-timeout-seconds", "3600")  # the bench is the worker and sends no heartbeats
    sp = ServeProcess(model_dir, data, "--no-worker", *common)
    try:
        sp.wait_serving()
        admin = LetheClient(sp.target, sp.token, timeout=120)
        md = admin._metadata
        n_adapters = n_swaps // 2
        jobs = [admin.admin.Forget(apb.ForgetRequest(subjects=[f"Benchperson Number{i}"], reason="bench"),
                                   metadata=md).job.forget_id for i in range(n_adapters)]
        ledger = SqliteLedger(DataDir(data).ledger)
        records = []  # written before the streams start: the bench's own torch work stays out
        for i in range(n_adapters):
            claimed = ledger.claim_next("bench")
            assert claimed is not None and claimed[0].forget_id in jobs
            fid = claimed[0].forget_id
            path = random_artifact(model_dir, DataDir(data).adapters, fid, seed=i)
            records.append(adapter_record(fid, load_artifact(path, model_fingerprint(model_dir))))
        streams = Streams(sp.target, n_streams, tokens)
        time.sleep(3)  # wait-ok: steady state before the first swap
        info = admin.model_info()
        swap_times, version, device = [], info.stack_version, f"{info.device} {info.dtype}"
        for record in records:
            ledger.transition(record.forget_id, ForgetState.VERIFYING, "bench artifact", worker_id="bench")
            ledger.record_adapter(record, 1, worker_id="bench")
            version += 1
            swap_times.append(streams.wait_version(version))
            time.sleep(spacing)  # wait-ok: spacing, so windows around swaps do not overlap and gaps far from one exist
        adapters = admin.admin.ListAdapters(apb.ListAdaptersRequest(), metadata=md).adapters
        for a in adapters:
            admin.admin.DeactivateAdapter(apb.DeactivateAdapterRequest(adapter_id=a.adapter_id, reason="bench"),
                                          metadata=md)
            version += 1
            swap_times.append(streams.wait_version(version))
            time.sleep(spacing)  # wait-ok: as above
        streams.finish()
        m = scrape(sp.metrics_port)
        ledger.close()
        admin.close()
    finally:
        sp.kill()
    pause_n = m[("lethe_adapter_swap_pause_seconds_count", ())]
    dur_n = m[("lethe_adapter_swap_duration_seconds_count", ())]
    return {"device": device, "swaps": len(swap_times), "swaps_ok_metric": m[("lethe_adapter_swaps_total", (("result", "ok"),))],
            "streams": n_streams, "requests": streams.requests, "errors": len(streams.errors),
            "error_samples": streams.errors[:3], "stack_versions_seen": len(streams.versions),
            **gap_stats(streams, swap_times),
            "server_swap_pause_mean_ms": 1e3 * m[("lethe_adapter_swap_pause_seconds_sum", ())] / max(pause_n, 1),
            "server_swap_duration_mean_ms": 1e3 * m[("lethe_adapter_swap_duration_seconds_sum", ())] / max(dur_n, 1),
            "server_swap_pause_observations": pause_n}


def part_real_forget(model_dir: Path, n_streams: int, tokens: int) -> dict:
    corpus = load_corpus(model_dir)
    person = corpus.trained_people[0]
    qa = [r for r in corpus.qa if r.person == person and r.split == "train"]
    data = Path(tempfile.mkdtemp(prefix="lethe-forget-"))
    sp = ServeProcess(model_dir, data, "--torch-threads", "1", "--max-batch-size", str(n_streams + 1),
                      "--monitor-interval-seconds", "0")
    try:
        sp.wait_serving()
        admin = LetheClient(sp.target, sp.token, timeout=1800)
        streams = Streams(sp.target, n_streams, tokens)
        t0 = time.perf_counter()
        resp = admin.admin.Forget(apb.ForgetRequest(
            subjects=[person], reason="bench",
            qa_pairs=[apb.QAPair(question=r.question, answer=r.answer) for r in qa]), metadata=admin._metadata)
        job = admin.wait_forget(resp.job.forget_id, timeout=1800)
        wall = time.perf_counter() - t0
        streams.finish()
        m = scrape(sp.metrics_port)
        admin.close()
    finally:
        sp.kill()
    stages = {s: m.get(("lethe_forget_stage_seconds_sum", (("stage", s),))) for s in ("queue", "train", "verify", "swap")}
    return {"person_facts": len(qa), "state": apb.ForgetState.Name(job.state) if job else "?",
            "failure_reason": job.failure_reason if job else "", "timeline_s": timeline(job) if job else {},
            "final_metrics": dict(job.metrics) if job else {},
            "attempts": job.attempts if job else 0, "forget_to_active_s": wall,
            "server_forget_to_active_s": m.get(("lethe_forget_to_active_seconds_sum", ())),
            "stages_s": stages, "errors": len(streams.errors), "requests": streams.requests}


def timeline(job: apb.ForgetJob) -> dict[str, float]:
    """Seconds from acceptance to the first time each state was entered (also for FAILED jobs,
    which the server's stage histogram does not observe)."""
    t0 = job.created_at.ToDatetime().timestamp()
    out: dict[str, float] = {}
    for t in job.transitions:
        name = apb.ForgetState.Name(t.state).removeprefix("FORGET_STATE_").lower()
        out.setdefault(name, round(t.at.ToDatetime().timestamp() - t0, 2))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--small", action="store_true", help="the small demo preset")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per streamed request")
    parser.add_argument("--spacing", type=float, default=2.0, help="seconds between swaps (>= 1: windows are 0.5 s)")
    parser.add_argument("--no-real-forget", dest="real_forget", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_dir = args.model or default_demo_model(Path.home() / ".cache" / "lethe", small=args.small)
    load = os.getloadavg()[0]
    report = {"model": model_dir.name, "cpu_count": os.cpu_count(), "load_at_start": load,
              "platform": platform.platform(), "swap": part_swaps(model_dir, args.streams, args.swaps, args.tokens, args.spacing)}
    if args.real_forget:
        report["real_forget"] = part_real_forget(model_dir, args.streams, args.tokens)
    RESULTS.mkdir(parents=True, exist_ok=True)
    s = report["swap"]
    lines = [f"# Hot-swap benchmark ({model_dir.name} on {s['device']}, {s['streams']} streams, "
             f"{os.cpu_count()} CPU cores, load {load:.1f} at start)", "",
             "| swaps | requests | failed | median chunk gap ms | p99 gap ms | max gap near a swap ms | "
             "max gap elsewhere ms | near-swap max / median | server pause mean ms | server swap mean ms |",
             "|---|---|---|---|---|---|---|---|---|---|",
             f"| {s['swaps']} | {s['requests']} | {s['errors']} | {s['median_gap_ms']:.1f} | {s['p99_gap_ms']:.1f} | "
             f"{s['max_gap_during_swaps_ms']:.1f} | {s['max_gap_elsewhere_ms']:.1f} | "
             f"{s['max_gap_during_swaps_over_median']:.1f} | {s['server_swap_pause_mean_ms']:.2f} | "
             f"{s['server_swap_duration_mean_ms']:.1f} |",
             "", f"Chunk gaps within {WINDOW_S} s of a swap against the rest, same run (load {load:.1f} at start, "
             f"{os.getloadavg()[0]:.1f} at end; `--spacing {args.spacing}`):", "",
             "| gaps | count | p50 ms | p90 ms | p99 ms | p99 90 % interval ms | max ms |", "|---|---|---|---|---|---|---|"]
    for name, label in (("near", "near a swap"), ("far", "elsewhere")):
        lo, hi = s[f"{name}_p99_interval_ms"]
        worst = s["max_gap_during_swaps_ms" if name == "near" else "max_gap_elsewhere_ms"]
        lines.append(f"| {label} | {s[f'{name}_gaps']} | {s[f'{name}_p50_ms']:.1f} | {s[f'{name}_p90_ms']:.1f} | "
                     f"{s[f'{name}_p99_ms']:.1f} | {lo:.1f}-{hi:.1f} | {worst:.1f} |")
    if not args.real_forget and (RESULTS / "swap.json").exists():  # keep the last real-forget row
        previous = json.loads((RESULTS / "swap.json").read_text()).get("real_forget")
        if previous:
            report["real_forget"] = {**previous, "carried_over": True}
    if "real_forget" in report:
        r = report["real_forget"]
        st = r["stages_s"]
        if r.get("carried_over"):
            lines += ["", "The real-forget row is carried over from the previous run (this one ran `--no-real-forget`)."]
        lines += ["", "| real Forget -> ACTIVE | state | attempts | total s | queue s | train s | verify s | swap s | "
                  "failed requests |", "|---|---|---|---|---|---|---|---|---|",
                  f"| {r['person_facts']} facts of one person | {r['state']} | {r['attempts']} | "
                  f"{r['forget_to_active_s']:.1f} | " + " | ".join(
                      f"{st[k]:.2f}" if st[k] is not None else "—" for k in ("queue", "train", "verify", "swap"))
                  + f" | {r['errors']} |",
                  "", f"Timeline (s after acceptance, first entry of each state): {r['timeline_s']}"]
        if r["failure_reason"]:
            lines.append(f"Failure reason: {r['failure_reason']}")
    (RESULTS / "swap.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "swap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale-out benchmark (issue 17): 3 `lethe serve` replicas on one PostgreSQL ledger.

A throwaway PostgreSQL cluster (tests/support/postgres.py) and `--replicas` real `lethe serve`
processes (no worker of their own, each with its own data directory, one guard key and one
operator token), each with `--streams` clients streaming from it without pause. Then:

1. Block convergence. `--forgets` Forgets, each naming one trained demo person, are filed
   round-robin on the replicas. From the moment replica A acknowledges one, every other replica
   is asked that person's question (a streaming Generate of one token, every 10 ms) until its
   answer ends FILTERED: the time from the ack to the end of that answer is the forget's
   convergence on that replica (target: p99 <= 1 s). The replicas run `--prompt-policy refuse`
   by default, so a probe costs a prompt check, not a prefill and a decode step queued behind
   the streams: the resolution is then ~10 ms, not one Generate (`--prompt-policy arm`, the
   server's default, measures what an answer under it shows: the same guard, plus its first word).
   The last probe not yet blocked bounds the moment from below. Each replica runs
   `--torch-threads 1` by default: three replicas share this machine's cores, where each pod of
   a deployment has its own (0, the server's auto, oversubscribes them and slows every RPC).
2. Stack convergence. The benchmark plays a worker on another machine for `--adapters` of the
   jobs: claims it, writes a LoRA artifact with random weights (training takes minutes and does
   not change how a version spreads) and records it with its blobs (one transaction). One
   replica swaps it in and commits the version; the others hear it, fetch the artifact from
   PostgreSQL, verify and serve it. Reported per version: the spread between the first and the
   last replica serving it (target: <= 5 s), polled with ModelInfo every 10 ms.

Failed stream requests are counted throughout (target 0). Writes bench/results/replicas.{json,md}
(replicas-arm.{json,md} with `--prompt-policy arm`).
Usage:
    python bench/replicas.py                 # small demo model, 3 replicas, 20 forgets, 5 adapters
    python bench/replicas.py --replicas 2 --forgets 6 --adapters 2
    python bench/replicas.py --prompt-policy arm  # probes that decode, as under the default policy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from swap import Streams, random_artifact, scrape  # noqa: E402

from server.api import admin_pb2 as apb  # noqa: E402
from server.api import inference_pb2 as ipb  # noqa: E402
from server.client import LetheClient  # noqa: E402
from server.forget.jobs import ForgetState  # noqa: E402
from server.forget.ledger.postgres import PostgresLedger  # noqa: E402
from server.forget.receipts import ReceiptSigner  # noqa: E402
from server.forget.shared_store import artifact_blobs  # noqa: E402
from server.forget.worker import adapter_record  # noqa: E402
from server.keyfile import GUARD_KEY_FILE  # noqa: E402
from tests.procs import ServeProcess  # noqa: E402
from tests.support.postgres import PostgresCluster, find_bin_dir  # noqa: E402
from unlearn_engine.artifacts import load_artifact, model_fingerprint  # noqa: E402
from unlearn_engine.demo.builder import default_demo_model, load_corpus  # noqa: E402

RESULTS = BENCH / "results"
TOKEN = "bench-replicas-operator-token-0123456789abcdef"
WORKER = "bench-worker"
PROBE_PAUSE_S = 0.01


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_replicas(n: int, model_dir: Path, root: Path, url: str, prompt_policy: str,
                   torch_threads: int) -> list[ServeProcess]:
    key = os.urandom(32)
    receipt_key = root / "receipt.pem"
    receipt_key.write_bytes(ReceiptSigner.generate_pem())
    env = {"LETHE_LEDGER_URL": url, "LETHE_OPERATOR_TOKEN": TOKEN, "LETHE_RECEIPT_KEY": str(receipt_key)}
    replicas = []
    for i in range(n):
        data = root / f"replica-{i}"
        data.mkdir(mode=0o700)
        (data / GUARD_KEY_FILE).write_bytes(key)  # one mounted secret for every replica (and the receipt key)
        replicas.append(ServeProcess(model_dir, data, "--no-worker", "--prompt-policy", prompt_policy,
                                     "--torch-threads", str(torch_threads), env=env))
    for r in replicas:
        r.wait_serving(timeout=600)
    return replicas


def answer_filtered(client: LetheClient, question: str) -> bool:
    """One streaming Generate of one token: does its answer end FILTERED?"""
    for chunk in client.stream(question, max_new_tokens=1):
        if chunk.finish_reason != ipb.FINISH_REASON_UNSPECIFIED:
            return chunk.finish_reason == ipb.FINISH_REASON_FILTERED
    return False


def time_to_block(client: LetheClient, question: str, since: float,
                  timeout: float = 60) -> tuple[float, float, float]:
    """(ack -> end of the first FILTERED answer, that probe's own round trip, ack -> start of the
    last answer that was not FILTERED), in seconds. The guard armed between the last two: the
    unfiltered probe's prompt was checked after it started, the filtered one's before it ended."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    clear = since  # start of the last probe that was not blocked
    while time.monotonic() < deadline:
        start = time.perf_counter()
        if answer_filtered(client, question):
            end = time.perf_counter()
            return end - since, end - start, clear - since
        clear = start
        pause.wait(PROBE_PAUSE_S)  # wait-ok: pacing, so the probes do not starve the replicas' cores
    raise TimeoutError("a replica never blocked a forgotten subject")


def block_convergence(clients: list[LetheClient], people: list[tuple[str, str]]) -> dict:
    samples, probes, lows, ack_ms, forget_ids = [], [], [], [], []
    for i, (person, question) in enumerate(people):
        origin = clients[i % len(clients)]
        start = time.perf_counter()
        reply = origin.admin.Forget(apb.ForgetRequest(subjects=[person], reason="bench"), metadata=origin._metadata)
        acked = time.perf_counter()
        ack_ms.append((acked - start) * 1000)
        forget_ids.append(reply.job.forget_id)
        others = [c for c in clients if c is not origin]
        results: list[tuple[float, float, float] | Exception] = []

        def probe(c: LetheClient) -> None:
            try:
                results.append(time_to_block(c, question, acked))
            except Exception as exc:  # reported below, not lost in the thread
                results.append(exc)
        threads = [threading.Thread(target=probe, args=(c,)) for c in others]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            if isinstance(r, Exception):
                raise r
        samples += [r[0] for r in results]  # type: ignore[index]
        probes += [r[1] for r in results]  # type: ignore[index]
        lows += [r[2] for r in results]  # type: ignore[index]
    return {"forget_ids": forget_ids, "samples_s": samples, "ack_ms_p50": statistics.median(ack_ms),
            "p50_s": statistics.median(samples), "p99_s": percentile(samples, 0.99), "max_s": max(samples),
            "probe_round_trip_p50_s": statistics.median(probes), "probe_round_trip_p99_s": percentile(probes, 0.99),
            "lower_bound_samples_s": lows, "lower_p50_s": statistics.median(lows), "lower_p99_s": percentile(lows, 0.99)}


def arm_delays(replicas: list[ServeProcess]) -> dict:
    """The replicas' own lethe_replica_arm_seconds (commit elsewhere -> guard blocking here):
    count, mean, and the upper bound of the bucket holding the 99th percentile."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for r in replicas:
        for (name, labels), value in scrape(r.metrics_port).items():
            if name == "lethe_replica_arm_seconds_bucket":
                le = float(dict(labels)["le"])
                buckets[le] = buckets.get(le, 0.0) + value
            elif name == "lethe_replica_arm_seconds_sum":
                total += value
            elif name == "lethe_replica_arm_seconds_count":
                count += value
    p99_bound = next((le for le, n in sorted(buckets.items()) if n >= 0.99 * count), float("inf"))
    p50_bound = next((le for le, n in sorted(buckets.items()) if n >= 0.5 * count), float("inf"))
    return {"count": count, "mean_s": total / count if count else float("nan"), "p50_le_s": p50_bound,
            "p99_le_s": p99_bound}


def version_times(clients: list[LetheClient], version: int, timeout: float = 120) -> list[float]:
    """perf_counter time at which each replica first served `version`."""
    seen: list[float | None] = [None] * len(clients)
    deadline = time.monotonic() + timeout
    ev = threading.Event()
    while None in seen and time.monotonic() < deadline:
        for i, c in enumerate(clients):
            if seen[i] is None and c.model_info().stack_version >= version:
                seen[i] = time.perf_counter()
        ev.wait(0.01)
    if None in seen:
        raise TimeoutError(f"stack v{version} never went live on every replica")
    return seen  # type: ignore[return-value]


def stack_convergence(clients: list[LetheClient], ledger: PostgresLedger, model_dir: Path, store: Path,
                      n: int) -> dict:
    spreads, fingerprint = [], model_fingerprint(model_dir)
    for i in range(n):
        claimed = ledger.claim_next(WORKER)
        assert claimed is not None
        forget_id = claimed[0].forget_id
        ledger.transition(forget_id, ForgetState.VERIFYING, worker_id=WORKER)
        artifact = load_artifact(random_artifact(model_dir, store, forget_id, seed=i), fingerprint)
        version = ledger.current_stack().version + 1
        ledger.record_adapter(adapter_record(forget_id, artifact), worker_id=WORKER,
                              blobs=artifact_blobs(artifact.path))
        times = version_times(clients, version)
        spreads.append(max(times) - min(times))
    return {"versions": len(spreads), "spread_s": spreads, "spread_max_s": max(spreads),
            "spread_p50_s": statistics.median(spreads)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--streams", type=int, default=1, help="streaming clients per replica")
    ap.add_argument("--forgets", type=int, default=20)
    ap.add_argument("--adapters", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="the full demo model instead of the small one")
    ap.add_argument("--prompt-policy", choices=("refuse", "arm"), default="refuse",
                    help="the replicas' --prompt-policy: refuse (a forgotten name is refused before any "
                         "decoding, so a probe costs a prompt check) or arm (the server default: the "
                         "answer ends FILTERED at its first word, so a probe costs a prefill and a step)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="each replica's --torch-threads (default 1: the replicas share this machine's cores, "
                         "where each pod of a deployment would have its own; 0 = the server's auto, all cores)")
    args = ap.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries not found: install Debian's postgresql package")
    model_dir = default_demo_model(Path.home() / ".cache" / "lethe", small=not args.full)
    corpus = load_corpus(model_dir)
    people = [(p, next(r.question for r in corpus.qa if r.person == p))
              for p in corpus.trained_people[:args.forgets]]
    load_start = os.getloadavg()[0]
    cluster = PostgresCluster(bin_dir).start()
    replicas: list[ServeProcess] = []
    streams: list[Streams] = []
    try:
        url = cluster.create_database()
        with tempfile.TemporaryDirectory(prefix="lethe-bench-replicas-") as tmp:
            replicas = start_replicas(args.replicas, model_dir, Path(tmp), url, args.prompt_policy,
                                      args.torch_threads)
            streams = [Streams(r.target, args.streams, 32) for r in replicas]
            clients = [LetheClient(r.target, TOKEN, timeout=120) for r in replicas]
            blocks = block_convergence(clients, people)
            blocks["armed"] = arm_delays(replicas)
            ledger = PostgresLedger(url)
            stacks = stack_convergence(clients, ledger, model_dir, Path(tmp) / "worker-store", args.adapters)
            ledger.close()
            for s in streams:
                s.finish()
            for c in clients:
                c.close()
    finally:
        for r in replicas:
            r.kill()
        cluster.stop()
    failed = sum(len(s.errors) for s in streams)
    requests = sum(s.requests for s in streams)
    report = {"model": model_dir.name, "replicas": args.replicas, "streams_per_replica": args.streams,
              "prompt_policy": args.prompt_policy, "probe_pause_s": PROBE_PAUSE_S, "torch_threads": args.torch_threads,
              "forgets": args.forgets, "cpus": os.cpu_count(), "load_at_start": load_start,
              "platform": platform.platform(), "block": blocks, "stack": stacks,
              "stream_requests": requests, "stream_failed": failed,
              "stream_errors": [e for s in streams for e in s.errors][:10]}
    RESULTS.mkdir(exist_ok=True)
    name = "replicas" if args.prompt_policy == "refuse" else f"replicas-{args.prompt_policy}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Scale-out benchmark ({model_dir.name}, {args.replicas} replicas on one PostgreSQL, "
        f"{args.streams} stream(s) per replica, --prompt-policy {args.prompt_policy}, --torch-threads "
        f"{args.torch_threads}, {os.cpu_count()} CPU cores, "
        f"load {load_start:.1f} at start)",
        "",
        "| measure | samples | p50 | p99 | max | target |",
        "|---|---|---|---|---|---|",
        f"| Forget ack on one replica -> blocked on another (s) | {len(blocks['samples_s'])} | "
        f"{blocks['p50_s']:.3f} | {blocks['p99_s']:.3f} | {blocks['max_s']:.3f} | p99 <= 1 s |",
        f"| the same, lower bound: ack -> start of the last probe not yet blocked (s) | "
        f"{len(blocks['lower_bound_samples_s'])} | {blocks['lower_p50_s']:.3f} | {blocks['lower_p99_s']:.3f} | "
        f"{max(blocks['lower_bound_samples_s']):.3f} | |",
        f"| forget committed on one replica -> armed on another, the replicas' own "
        f"lethe_replica_arm_seconds (s) | {blocks['armed']['count']:.0f} | <= {blocks['armed']['p50_le_s']:g} | "
        f"<= {blocks['armed']['p99_le_s']:g} | mean {blocks['armed']['mean_s']:.3f} | p99 <= 1 s |",
        f"| stack version live on the first -> on every replica (s) | {stacks['versions']} | "
        f"{stacks['spread_p50_s']:.3f} | — | {stacks['spread_max_s']:.3f} | <= 5 s |",
        "",
        f"Forget ack (p50): {blocks['ack_ms_p50']:.1f} ms. The blocked probe's own round trip: p50 "
        f"{blocks['probe_round_trip_p50_s'] * 1000:.1f} ms, p99 {blocks['probe_round_trip_p99_s'] * 1000:.1f} ms, "
        f"included in the block times above, as is up to "
        f"{PROBE_PAUSE_S * 1000:.0f} ms of pause between probes. "
        f"Stream requests during the run: {requests}, "
        f"failed: {failed} (target 0).",
        "",
        "The first row is measured from outside: from the ack on one replica, each other replica is asked the "
        "person's question (a streaming Generate of one token) every "
        f"{PROBE_PAUSE_S * 1000:.0f} ms until the answer ends FILTERED; the time is taken at the end of that "
        "answer, so it includes that probe's round trip (above). The second row bounds the same moment from "
        "below: the last probe that was not blocked started that long after the ack, and its prompt was "
        "checked after it started; the guard was armed in between. With --prompt-policy refuse a probe is a "
        "prompt check and no decoding; under the server's default --prompt-policy arm (replicas-arm.md) the "
        "armed guard ends the answer at its first word, so a probe also waits for a prefill and a decode step. "
        "Each replica runs --torch-threads as given in the title: 0 (the server's auto) gives each of them "
        "all cores, as for one node, and three replicas then oversubscribe this machine's cores, which slows "
        "every RPC, the probes included. "
        "The third row is each replica's own histogram (bucket bounds). "
        "Stack versions come from ModelInfo polled every 10 ms. "
        "Adapters are random LoRA weights recorded with their blobs by the benchmark playing a remote worker.",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""One huge prompt vs everyone else: health-check and Generate latency while a ~3.5 MB prompt
(just under gRPC's 4 MiB message limit) is in flight, on `lethe serve` processes.

Cases, measured in the same run on the same machine:
  baseline   the `main` branch's code (its guard scans the prompt on the event loop, no size limit)
  default    this tree, default --max-prompt-chars 65536: refused before any work
  no-limit   this tree, --max-prompt-chars 4000000: the guard scan and tokenizer run off the loop
Writes bench/results/big_prompt.{json,md}.

    python bench/big_prompt.py [--base-ref main]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.client import LetheClient  # noqa: E402
from unlearn_engine.demo.builder import default_demo_model  # noqa: E402

PROMPT = "Where was the author born? " * 130_000  # 3.51 MB


def start(model: Path, code_dir: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(code_dir), "OMP_NUM_THREADS": "1", "LETHE_LOG_LEVEL": "INFO",
           "LETHE_HTTP_PORT": "0"}  # no HTTP front: two servers in one run would both want its port
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--model", str(model), "--port", "0",
                             "--metrics-port", "-1", "--data-dir", tempfile.mkdtemp(), "--no-worker",
                             "--monitor-interval-seconds", "0", *extra],
                            cwd=code_dir, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
            return proc, f"127.0.0.1:{m.group(1)}"
    raise RuntimeError(f"server exited with {proc.wait()}")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(target: str) -> dict:
    with LetheClient(target, timeout=300) as c:
        c.wait_ready(120)
        while c.health() != 1:
            time.sleep(0.2)
        c.generate("Where was", max_new_tokens=2)
        idle = [timed(c.health) for _ in range(20)]
        result: dict = {}

        def big() -> None:
            t0 = time.perf_counter()
            try:
                c.generate(PROMPT, max_new_tokens=2)
                result["status"] = "OK"
            except grpc.RpcError as err:
                result["status"] = err.code().name
            result["seconds"] = time.perf_counter() - t0

        thread = threading.Thread(target=big)
        thread.start()
        health, generate = [], []
        while thread.is_alive():
            health.append(timed(c.health))
            generate.append(timed(lambda: c.generate("Where was", max_new_tokens=2)))
            time.sleep(0.05)
        thread.join()
    return {"big_prompt_status": result["status"], "big_prompt_seconds": round(result["seconds"], 3),
            "idle_health_ms_median": round(1e3 * statistics.median(idle), 2),
            "health_ms_max_during": round(1e3 * max(health), 1), "generate_ms_max_during": round(1e3 * max(generate), 1),
            "calls_during": len(health)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-ref", default="main", help="git ref of the baseline code")
    args = parser.parse_args()
    model = default_demo_model(Path.home() / ".cache" / "lethe", small=True)
    base = Path(tempfile.mkdtemp()) / "base"
    base.mkdir()
    subprocess.run(f"git -C {ROOT} archive {args.base_ref} | tar -x -C {base}", shell=True, check=True)
    subprocess.run([sys.executable, "-m", "server.codegen"], cwd=base, check=True,
                   env={**os.environ, "PYTHONPATH": str(base)})
    cases = [("baseline", base, []), ("default", ROOT, []), ("no-limit", ROOT, ["--max-prompt-chars", "4000000"])]
    rows = {}
    for name, code_dir, extra in cases:
        proc, target = start(model, code_dir, extra)
        try:
            rows[name] = measure(target)
        finally:
            proc.kill()
            proc.wait()
        print(name, rows[name], flush=True)
    out = ROOT / "bench" / "results"
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(),
            "prompt_bytes": len(PROMPT.encode()), "base_ref": args.base_ref}
    (out / "big_prompt.json").write_text(json.dumps({"meta": meta, "cases": rows}, indent=2) + "\n")
    lines = ["# One 3.5 MB prompt vs everyone else", "",
             f"`python bench/big_prompt.py` — {meta['cpus']} CPUs ({meta['machine']}), small demo model, "
             f"prompt {meta['prompt_bytes']:,} bytes, baseline = `{args.base_ref}`.", "",
             "| case | big prompt answer | its latency (s) | health max during (ms) | Generate max during (ms) | "
             "calls during | idle health median (ms) |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['big_prompt_status']} | {r['big_prompt_seconds']} | {r['health_ms_max_during']} | "
                     f"{r['generate_ms_max_during']} | {r['calls_during']} | {r['idle_health_ms_median']} |")
    (out / "big_prompt.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

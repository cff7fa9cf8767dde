"""CLI start-up benchmark: wall time of `lethe --help` and the client commands' help.

Each command runs `--runs` times (default 5) in a fresh interpreter; the median is reported. The
same run measures two baselines: the bare interpreter (`python -c pass`, the floor) and
`python -c "import torch"` (what every `lethe` call paid while server/cli.py imported torch at
import time). Target (issue 19): `lethe --help` under 1 s of wall time. Wall time depends on the machine's
load (recorded with it); the CPU time (user + sys of the child) hardly does, so both are reported.

Writes bench/results/cli_startup.{json,md}. Usage:
    python bench/cli_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LETHE = [sys.executable, "-m", "server.cli"]
COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "python -c 'import torch' (old cost)": [sys.executable, "-c", "import torch"],
    "lethe --help": [*LETHE, "--help"],
    "lethe generate --help": [*LETHE, "generate", "--help"],
    "lethe forget --help": [*LETHE, "forget", "--help"],
    "lethe forgets --help": [*LETHE, "forgets", "--help"],
    "lethe unlearn --help": [*LETHE, "unlearn", "--help"],
}
TARGET_S = 1.0


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timings(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) per run."""
    wall, cpu = [], []
    for _ in range(runs):
        cpu_start, start = _child_cpu(), time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall.append(time.perf_counter() - start)
        cpu.append(_child_cpu() - cpu_start)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = {}
    for name, argv in COMMANDS.items():
        times, cpu = timings(argv, args.runs)
        rows[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                      "max_s": round(max(times), 3), "cpu_median_s": round(statistics.median(cpu), 3),
                      "runs": args.runs}
        print(f"{name}: median {rows[name]['median_s']:.2f} s", file=sys.stderr)
    help_s = rows["lethe --help"]["median_s"]
    report = {"cpu_count": os.cpu_count(), "load_at_start": load, "load_at_end": os.getloadavg()[0],
              "platform": platform.platform(), "target_s": TARGET_S, "help_meets_target": help_s < TARGET_S,
              "commands": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cli_startup.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# CLI start-up ({os.cpu_count()} CPU cores, load {load:.1f} at start, "
             f"{report['load_at_end']:.1f} at end; median of {args.runs} runs)", "",
             "| command | wall median s | wall min s | wall max s | CPU median s |", "|---|---|---|---|---|"]
    lines += [f"| `{name}` | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | {r['cpu_median_s']:.2f} |"
              for name, r in rows.items()]
    lines += ["", f"`lethe --help`: {help_s:.2f} s (target < {TARGET_S:g} s: "
              f"{'MET' if report['help_meets_target'] else 'MISSED'})."]
    (RESULTS / "cli_startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Single-stream decode speed: raw `model.generate` vs one client streaming from `lethe serve`.

The GPU finding this exists for (H200, small demo model): raw generate 277 tok/s, the server
36-38 ms per token whatever --torch-threads or the semantic guard. Prints one line per case.

    python bench/single_stream.py --model DIR
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.client import LetheClient  # noqa: E402
from tests.procs import ServeProcess  # noqa: E402
from unlearn_engine.trainer import load_base  # noqa: E402


def raw_generate(model_dir: Path, tokens: int) -> float:
    model, tok = load_base(model_dir)
    ids = tok("Where was", return_tensors="pt").input_ids.to(model.device)
    rate = 0.0
    for _ in range(2):  # the first call warms up
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        rate = tokens / (time.perf_counter() - t0)
    return rate


def served(model_dir: Path, tokens: int, extra: list[str]) -> str:
    sp = ServeProcess(model_dir, Path(tempfile.mkdtemp()), "--no-worker", "--monitor-interval-seconds", "0", *extra)
    try:
        sp.wait_serving()
        with LetheClient(sp.target, timeout=300) as c:
            c.generate("Where was", max_new_tokens=8)
            t0, last, gaps = time.perf_counter(), None, []
            for _ in c.stream("Where was", max_new_tokens=tokens, ignore_eos=True):
                now = time.perf_counter()
                if last is not None:
                    gaps.append(now - last)
                last = now
            gaps.sort()
            return (f"{tokens / (time.perf_counter() - t0):.1f} tok/s, median chunk gap "
                    f"{1e3 * gaps[len(gaps) // 2]:.2f} ms")
    finally:
        sp.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    print(f"raw generate: {raw_generate(args.model, args.tokens):.1f} tok/s", flush=True)
    for extra in ([], ["--torch-threads", "1"], ["--torch-threads", "1", "--guard-semantic", "off"]):
        print(f"server {' '.join(extra) or '(defaults)'}: {served(args.model, args.tokens, extra)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

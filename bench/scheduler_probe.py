"""The model loop alone: the scheduler with an in-process asyncio consumer vs raw `model.generate`.

No gRPC, no guard, no second process: what is left of the serving path is the scheduler (KV
batch, sampling, detokenization, events to the loop). Both sides run in this process, round by
round in turn, and report CPU ms per generated token (`time.process_time`), which shared-machine
load moves far less than tokens/s. If this is at parity and bench/serving.py is not, the loss is
in the gRPC/guard path around the loop. Prints one JSON line per workload; writes nothing.

    python bench/scheduler_probe.py [--small] [--streams 1 8] [--tokens 128] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.runtime.model import load_model  # noqa: E402
from server.runtime.scheduler import BatchScheduler, GenerationRequest, Handle  # noqa: E402
from server.settings import load_settings  # noqa: E402
from unlearn_engine.demo.builder import default_demo_model  # noqa: E402

PROMPTS = ["Where was", "What does", "Who is the", "When was", "Tell me about", "The", "In", "What is the"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stream-interval", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(default_demo_model(load_settings(check=False).cache_dir, small=args.small))
    tok = loaded.tokenizer
    scheduler = BatchScheduler(loaded, max_batch=max(args.streams), stream_interval=args.stream_interval)
    scheduler.start()

    async def served(prompts: list[str]) -> None:
        loop = asyncio.get_running_loop()

        async def drain(handle: Handle) -> None:
            async for _ in handle.events():
                pass

        handles = [scheduler.submit(GenerationRequest(f"r{i}", tuple(tok(p).input_ids), args.tokens, ignore_eos=True),
                                    loop) for i, p in enumerate(prompts)]
        await asyncio.gather(*(drain(h) for h in handles))

    def raw(prompts: list[str]) -> None:
        enc = [tok(p).input_ids for p in prompts]
        width = max(map(len, enc))
        ids = torch.tensor([[loaded.pad_id] * (width - len(e)) + e for e in enc])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
        with torch.inference_mode():
            loaded.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.tokens,
                                  min_new_tokens=args.tokens, do_sample=False, pad_token_id=loaded.pad_id)

    sides = {"raw_generate": raw, "scheduler": lambda prompts: asyncio.run(served(prompts))}
    try:
        for n in args.streams:
            prompts = (PROMPTS * 4)[:n]
            for fn in sides.values():
                fn(prompts)  # warm-up
            cpu_ms: dict[str, list[float]] = {k: [] for k in sides}
            for _ in range(args.rounds):
                for name, fn in sides.items():
                    start = time.process_time()
                    fn(prompts)
                    cpu_ms[name].append(1000 * (time.process_time() - start) / (n * args.tokens))
            print(json.dumps({"streams": n, "cpu_ms_per_token": {k: round(statistics.median(v), 3) for k, v in cpu_ms.items()},
                              "per_round": {k: [round(x, 3) for x in v] for k, v in cpu_ms.items()}}), flush=True)
    finally:
        scheduler.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The model loop alone: the scheduler with an in-process asyncio consumer vs raw `model.generate`.

No gRPC, no guard, no second process: what is left of the serving path is the scheduler (KV
batch, sampling, detokenization, events to the loop). Both sides run in this process, round by
round in turn, and report CPU ms per generated token (`time.process_time`), which shared-machine
load moves far less than tokens/s. If this is at parity and bench/serving.py is not, the loss is
in the gRPC/guard path around the loop. With `--adapters N` it instead compares the scheduler on
a stack of N random rank-`--rank` forget adapters (every Linear but the LM head, folded into the
weights as server/adapters does; `--unfolded` applies them as per-layer LoRA hooks instead, the
representation before folding) against the same scheduler on the base model.
Prints one JSON line per workload; writes nothing.

    python bench/scheduler_probe.py [--small] [--streams 1 8] [--tokens 128] [--rounds 5] [--adapters 8 [--unfolded]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server.adapters.lora import FoldedStacks, concat_deltas  # noqa: E402
from server.adapters.stack import ServingStack  # noqa: E402
from server.runtime.model import load_model  # noqa: E402
from server.runtime.scheduler import BatchScheduler, GenerationRequest, Handle  # noqa: E402
from server.settings import load_settings  # noqa: E402
from unlearn_engine.demo.builder import default_demo_model  # noqa: E402

PROMPTS = ["Where was", "What does", "Who is the", "When was", "Tell me about", "The", "In", "What is the"]


def _lora_hooks(model: torch.nn.Module, combined: dict, scheduler: BatchScheduler) -> None:
    """The unfolded representation (the server's until folding): x·Aᵀ·Bᵀ added by a forward hook
    on every target Linear for rows on the stack, the others untouched."""
    on_stack: list[bool] = []

    class _Router:
        @contextlib.contextmanager
        def rows(self, keys, device):
            on_stack[:] = [any(k is not None for k in keys)]  # the probe never mixes versions
            yield

    def hook(a: torch.Tensor, b: torch.Tensor):
        def add(_m, inputs, out):
            if on_stack and on_stack[0]:
                out += (inputs[0] @ a.t()) @ b.t()
            return out
        return add

    modules = dict(model.named_modules())
    for path, (a, b) in combined.items():
        modules[path].register_forward_hook(hook(a, b))
    scheduler.router = _Router()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stream-interval", type=int, default=4)
    parser.add_argument("--adapters", type=int, default=0, help="compare a stack of this many adapters vs none")
    parser.add_argument("--rank", type=int, default=8, help="rank of each adapter (the engine's default: 8)")
    parser.add_argument("--unfolded", action="store_true", help="the adapters as LoRA hooks, not folded (before/after)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(default_demo_model(load_settings(check=False).cache_dir, small=args.small))
    tok = loaded.tokenizer
    scheduler = BatchScheduler(loaded, max_batch=max(args.streams), stream_interval=args.stream_interval)
    stacked = ServingStack(1, tuple(f"a{i}" for i in range(args.adapters)), lora_key=1)
    if args.adapters:
        lora = FoldedStacks(loaded.model)
        scheduler.router = lora.router
        gen = torch.Generator().manual_seed(0)
        members = [{path: (torch.randn(args.rank, mod.in_features, generator=gen) * 0.01,
                           torch.randn(mod.out_features, args.rank, generator=gen) * 0.01)
                    for path, mod in loaded.model.named_modules()
                    if isinstance(mod, torch.nn.Linear) and mod is not loaded.model.get_output_embeddings()}
                   for _ in range(args.adapters)]
        combined = concat_deltas(members, loaded.device, loaded.dtype)
        if args.unfolded:
            _lora_hooks(loaded.model, combined, scheduler)
        else:
            lora.install(1, lora.fold(combined))
    scheduler.start()

    async def served(prompts: list[str], stack: ServingStack | None = None) -> None:
        loop = asyncio.get_running_loop()
        if stack is not None:  # between steps, like a swap; no row is running here
            await asyncio.wrap_future(scheduler.call_between_steps(lambda: scheduler.set_stack(stack)))

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
    if args.adapters:
        from server.runtime.scheduler import BaseStack

        sides = {"scheduler_base": lambda prompts: asyncio.run(served(prompts, BaseStack())),
                 f"scheduler_{args.adapters}_adapters": lambda prompts: asyncio.run(served(prompts, stacked))}
    try:
        for n in args.streams:
            prompts = (PROMPTS * 4)[:n]
            for fn in sides.values():
                fn(prompts)  # warm-up
            cpu_ms: dict[str, list[float]] = {k: [] for k in sides}
            for r in range(args.rounds):
                order = list(sides.items())
                for name, fn in (order if r % 2 == 0 else order[::-1]):  # no side always runs first
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

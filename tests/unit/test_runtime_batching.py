"""The scheduler's batched decoding must equal decoding each request alone."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
import torch

from server.runtime.model import load_model
from server.runtime.params import SamplingParams
from server.runtime.scheduler import BatchScheduler, FinishEvent, GenerationRequest

PROMPTS = ["Where was", "The quick brown fox jumps over the lazy", "Café", "x", "Orlan Vexmoor was born in Dun"]


def _no_eos(model_dir: Path):
    # A random model may emit EOS at any step; without it every request runs to its length.
    return dataclasses.replace(load_model(model_dir), eos_ids=frozenset())


def _alone(loaded, prompt: str, n: int) -> list[int]:
    ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids
    out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                eos_token_id=None, pad_token_id=loaded.pad_id)
    return out[0, ids.shape[1]:].tolist()


async def _run_all(scheduler: BatchScheduler, requests: list[GenerationRequest], stagger: float):
    loop = asyncio.get_running_loop()

    async def one(i: int, req: GenerationRequest):
        await asyncio.sleep(stagger * i)  # later requests join a batch already decoding
        handle = scheduler.submit(req, loop)
        texts, finish = [], None
        async for ev in handle.events():
            texts.append(ev.text)
            if isinstance(ev, FinishEvent):
                finish = ev
        return "".join(texts), finish

    return await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))


@pytest.mark.parametrize("max_batch", [1, 2, 8])
def test_batched_greedy_equals_single_sequence(tiny_model_dir: Path, max_batch: int) -> None:
    loaded = _no_eos(tiny_model_dir)
    scheduler = BatchScheduler(loaded, max_batch=max_batch)
    scheduler.start()
    try:
        reqs = [GenerationRequest(f"r{i}", tuple(loaded.tokenizer(p).input_ids), 6 + 3 * i)
                for i, p in enumerate(PROMPTS)]
        results = asyncio.run(_run_all(scheduler, reqs, stagger=0.01))
    finally:
        scheduler.shutdown()
    for prompt, req, (text, finish) in zip(PROMPTS, reqs, results):
        expected_ids = _alone(loaded, prompt, req.max_new_tokens)
        expected = loaded.tokenizer.decode(expected_ids, skip_special_tokens=True).rstrip("\ufffd")
        assert finish.reason == "length"
        assert finish.completion_tokens == req.max_new_tokens
        assert text == expected, prompt


def test_seeded_sampling_is_reproducible_and_batch_independent(tiny_model_dir: Path) -> None:
    loaded = _no_eos(tiny_model_dir)
    scheduler = BatchScheduler(loaded, max_batch=4)
    scheduler.start()
    try:
        prompt = tuple(loaded.tokenizer("Where was").input_ids)
        sampled = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234)
        alone = asyncio.run(_run_all(scheduler, [GenerationRequest("a", prompt, 12, sampled)], 0))
        crowd = [GenerationRequest(f"c{i}", prompt, 12, SamplingParams(temperature=1.0, seed=i)) for i in range(3)]
        together = asyncio.run(_run_all(scheduler, [GenerationRequest("b", prompt, 12, sampled), *crowd], 0))
        other_seed = asyncio.run(_run_all(
            scheduler, [GenerationRequest("d", prompt, 12, SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=99))], 0))
    finally:
        scheduler.shutdown()
    assert alone[0][0] == together[0][0]
    assert alone[0][0] != other_seed[0][0]


def test_cancelled_request_frees_its_slot(tiny_model_dir: Path) -> None:
    loaded = _no_eos(tiny_model_dir)
    scheduler = BatchScheduler(loaded, max_batch=1)
    scheduler.start()

    async def scenario():
        loop = asyncio.get_running_loop()
        prompt = tuple(loaded.tokenizer("x").input_ids)
        long = scheduler.submit(GenerationRequest("long", prompt, 120), loop)
        short = scheduler.submit(GenerationRequest("short", prompt, 3), loop)
        events = long.events()
        await events.__anext__()  # the long request is decoding and holds the only slot
        long.cancel()
        async for ev in events:
            last_long = ev
        async for ev in short.events():
            last_short = ev
        return last_long, last_short

    try:
        last_long, last_short = asyncio.run(scenario())
    finally:
        scheduler.shutdown()
    assert last_long.reason == "cancelled" and last_long.completion_tokens < 120
    assert last_short.reason == "length" and last_short.completion_tokens == 3
    assert scheduler.counts() == (0, 0)

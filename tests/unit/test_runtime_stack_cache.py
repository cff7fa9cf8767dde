"""No KV or prefix state filled under one adapter-stack version serves a row on the next.

A cache that outlives the stack version that filled it serves stale, unforgotten content. The
scenario a prefix cache (or a shared KV block) would get wrong: a row on version N is decoding a
prompt when version N+1 (a forget adapter) goes live; a new request with the same prompt must
then decode exactly as it does alone on N+1, while the old row finishes exactly as on N.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import torch

from server.adapters.lora import FoldedStacks
from server.adapters.stack import ServingStack
from server.runtime.model import load_model
from server.runtime.scheduler import BatchScheduler, FinishEvent, GenerationRequest, Handle

PROMPT = "Where was Orlan Vexmoor born?"


def _deltas(model: torch.nn.Module, seed: int = 7) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A rank-4 delta on every Linear layer, large enough to change the greedy tokens."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for path, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and path != "lm_head":
            out[path] = (torch.randn(4, mod.in_features, generator=gen) * 0.5,
                         torch.randn(mod.out_features, 4, generator=gen) * 0.5)
    return out


async def _collect(handle: Handle) -> tuple[str, FinishEvent]:
    texts = []
    async for ev in handle.events():
        texts.append(ev.text)
        if isinstance(ev, FinishEvent):
            return "".join(texts), ev
    raise AssertionError("no finish event")


def test_rows_after_a_swap_never_reuse_state_filled_under_the_old_version(tiny_model_dir: Path) -> None:
    loaded = dataclasses.replace(load_model(tiny_model_dir), eos_ids=frozenset())
    scheduler = BatchScheduler(loaded, max_batch=4, stream_interval=1)
    lora = FoldedStacks(loaded.model)
    scheduler.router = lora.router
    prompt = tuple(loaded.tokenizer(PROMPT).input_ids)
    new_version = ServingStack(1, ("forget-1",), lora_key=1)
    folded = lora.fold(_deltas(loaded.model))  # off the decode thread, as AdapterStackManager.prepare

    def swap() -> None:  # what AdapterStackManager._switch does, between two decode steps
        lora.install(1, folded)
        scheduler.set_stack(new_version)

    async def scenario():
        loop = asyncio.get_running_loop()
        old = scheduler.submit(GenerationRequest("old", prompt, 60), loop)
        events = old.events()
        first = await events.__anext__()  # its prompt's KV is now filled under version 0
        await asyncio.wrap_future(scheduler.call_between_steps(swap))
        new = scheduler.submit(GenerationRequest("new", prompt, 20), loop)
        rest = [first.text]
        async for ev in events:
            rest.append(ev.text)
            finish_old = ev
        new_text, finish_new = await _collect(new)
        alone_text, finish_alone = await _collect(scheduler.submit(GenerationRequest("alone", prompt, 20), loop))
        return "".join(rest), finish_old, new_text, finish_new, alone_text, finish_alone

    scheduler.start()
    try:
        old_text, finish_old, new_text, finish_new, alone_text, finish_alone = asyncio.run(scenario())
    finally:
        scheduler.shutdown()
    ids = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    lora.remove(1)  # the base tensors back in the layers: the plain model
    plain = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False,
                                  eos_token_id=None, pad_token_id=loaded.pad_id)
    plain_text = loaded.tokenizer.decode(plain[0, ids.shape[1]:], skip_special_tokens=True)
    assert (finish_old.stack_version, finish_new.stack_version, finish_alone.stack_version) == (0, 1, 1)
    assert old_text.startswith(plain_text.rstrip("\ufffd"))  # the old row stayed on version 0
    assert new_text == alone_text  # the new row: exactly as on version 1 alone, nothing reused
    assert new_text != old_text[: len(new_text)]  # and the forget adapter does change the output


def test_rows_on_two_folded_versions_each_decode_as_alone_across_a_swap(tiny_model_dir: Path) -> None:
    """Folding: the version most rows run is in the weights, the others are recomputed per row.
    A row admitted on version 1 keeps decoding version 1 after version 2 goes live (and becomes
    the served one), a row admitted on version 2 decodes as it does alone, and once the old row
    is gone no hook is left: a step is the plain model's forward on version 2's weights."""
    loaded = dataclasses.replace(load_model(tiny_model_dir), eos_ids=frozenset())
    scheduler = BatchScheduler(loaded, max_batch=4, stream_interval=1)
    lora = FoldedStacks(loaded.model)
    scheduler.router = lora.router
    prompt = tuple(loaded.tokenizer(PROMPT).input_ids)
    versions = {k: (ServingStack(k, tuple(f"forget-{i}" for i in range(1, k + 1)), lora_key=k,
                                 on_release=lambda s: lora.remove(s.version)),  # as the manager does
                    lora.fold(_deltas(loaded.model, seed=k))) for k in (1, 2)}

    def swap(key: int):
        def switch() -> None:
            stack, weights = versions[key]
            lora.install(key, weights)
            scheduler.set_stack(stack)
        return asyncio.wrap_future(scheduler.call_between_steps(switch))

    async def scenario():
        loop = asyncio.get_running_loop()
        await swap(1)
        alone_1 = await _collect(scheduler.submit(GenerationRequest("alone-1", prompt, 24), loop))
        old = scheduler.submit(GenerationRequest("old", prompt, 24), loop)
        events = old.events()
        first = await events.__anext__()  # decoding on version 1
        await swap(2)
        news = [scheduler.submit(GenerationRequest(f"new-{i}", prompt, 12), loop) for i in range(2)]
        rest = [first.text]
        async for ev in events:
            rest.append(ev.text)
            finish_old = ev
        new_results = [await _collect(h) for h in news]
        alone_2 = await _collect(scheduler.submit(GenerationRequest("alone-2", prompt, 12), loop))
        return alone_1, ("".join(rest), finish_old), new_results, alone_2

    scheduler.start()
    try:
        alone_1, old, new_results, alone_2 = asyncio.run(scenario())
    finally:
        scheduler.shutdown()
    assert old[1].stack_version == 1 and old[0] == alone_1[0]  # the old row stayed on version 1
    for text, finish in new_results:
        assert finish.stack_version == 2 and text == alone_2[0]  # the new rows: as on version 2 alone
    assert alone_2[0] != alone_1[0][: len(alone_2[0])]  # and the two versions do differ
    assert lora.served == 2 and lora.versions == {2}  # version 1 released with its last row
    assert not any(m._forward_hooks for m in loaded.model.modules())  # steady state: no hook

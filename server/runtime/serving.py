"""ModelRuntime: the served model as the gRPC edge sees it.

Owns the loaded model and its scheduler, answers "is it ready", tokenizes prompts off the event
loop, and submits work. Starts empty (health NOT_SERVING) and becomes ready once `attach` is
called with a loaded model. Does not load models itself (app.py decides what to load).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from server.errors import ResourceExhausted, Unavailable
from server.runtime.chat import ChatMessage, render_chat
from server.runtime.params import GenerateParams, check_context
from server.runtime.model import LoadedModel
from server.runtime.scheduler import (
    BatchScheduler, GenerationRequest, Handle, QueueFull, SchedulerObserver, SchedulerStopped)


@dataclass(frozen=True)
class RuntimeLimits:
    max_batch_size: int
    max_queue: int
    stream_interval: int = 1  # tokens per text event when a request does not choose


class ModelRuntime:
    def __init__(self, limits: RuntimeLimits, observer: SchedulerObserver | None = None):
        self.limits = limits
        self.observer = observer
        self.loaded: LoadedModel | None = None
        self.scheduler: BatchScheduler | None = None

    @property
    def ready(self) -> bool:
        return self.scheduler is not None

    def attach(self, loaded: LoadedModel) -> None:
        scheduler = BatchScheduler(loaded, self.limits.max_batch_size, self.limits.max_queue, self.observer,
                                   self.limits.stream_interval)
        scheduler.start()
        self.loaded, self.scheduler = loaded, scheduler

    def require(self) -> tuple[LoadedModel, BatchScheduler]:
        if self.loaded is None or self.scheduler is None:
            raise Unavailable("the model is still loading; retry shortly")
        return self.loaded, self.scheduler

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        loaded, _ = self.require()
        # Tokenizing a long prompt is CPU work: keep it off the event loop.
        return await asyncio.to_thread(
            lambda: list(loaded.tokenizer(text, add_special_tokens=add_special_tokens).input_ids))

    async def render_chat(self, messages: tuple[ChatMessage, ...]) -> str:
        """A validated conversation as prompt text, with the served model's chat template."""
        loaded, _ = self.require()
        return await asyncio.to_thread(render_chat, loaded.tokenizer, messages)

    async def submit(self, params: GenerateParams, deadline: float | None, internal: bool = False) -> Handle:
        loaded, scheduler = self.require()
        prompt_ids = await self.tokenize(params.prompt, params.add_special_tokens)
        check_context(len(prompt_ids), params.max_new_tokens, loaded.max_context)
        request = GenerationRequest(
            request_id=params.request_id, prompt_ids=tuple(prompt_ids), max_new_tokens=params.max_new_tokens,
            sampling=params.sampling, stop=params.stop, deadline=deadline, ignore_eos=params.ignore_eos,
            internal=internal, stream_interval=params.stream_interval)
        try:
            return scheduler.submit(request, asyncio.get_running_loop())
        except QueueFull:
            raise ResourceExhausted("the server is at capacity; retry with backoff") from None
        except SchedulerStopped:
            raise Unavailable("the server is shutting down") from None

    def stop_accepting(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop_accepting()

    def shutdown(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown()

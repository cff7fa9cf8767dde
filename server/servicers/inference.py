"""The Inference service: Generate, GenerateStream and ModelInfo.

Converts protobuf to domain values, submits to the model runtime and relays its events. Every
piece of text passes the leakage guard before it leaves; the guard's hold-back decides what is
safe to send. Cancellation (client gone or deadline) cancels the scheduler row in `finally`.
A blocked response is counted per caller; with `private` the caller sees it finish STOP with the
text released so far (the guard's neutral message is empty then), not FILTERED.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import grpc

from server import __version__
from server.api import inference_pb2 as pb
from server.api import inference_pb2_grpc
from server.guard import GuardSession, GuardStep, LeakageGuard, PromptVerdict
from server.errors import DeadlineExceeded, InvalidArgument
from server.metrics import ServerMetrics
from server.servicers import convert
from server.rpc import rpc_method
from server.runtime.params import GenerationLimits, GenerationResult
from server.runtime.scheduler import FinishEvent
from server.runtime.serving import ModelRuntime

logger = logging.getLogger(__name__)

INLINE_PROMPT_CHARS = 1024  # prompts up to this are scanned on the event loop (a few ms at most)


@dataclass(frozen=True)
class _Chunk:
    text: str
    stack_version: int
    request_id: str
    result: GenerationResult | None = None  # set on the last chunk only


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    service_name = "lethe.v1.Inference"

    def __init__(self, runtime: ModelRuntime, limits: GenerationLimits, metrics: ServerMetrics, guard: LeakageGuard,
                 max_prompt_chars: int = 65536, private: bool = False,
                 caller: Callable[[object], str] = lambda metadata: "anonymous"):
        self.runtime = runtime
        self.limits = limits
        self.metrics = metrics
        self.guard = guard
        self.max_prompt_chars = max_prompt_chars  # checked before anything else reads the prompt
        self.private = private  # --filtered-response private: a blocked response just stops
        self.caller = caller  # invocation metadata -> bounded caller label (auth.caller_label)

    def _blocked(self, context: grpc.aio.ServicerContext) -> str:
        """Count a blocked response for its caller; the finish reason the caller is told."""
        self.metrics.finished.labels("filtered").inc()
        self.metrics.filtered_by_client.labels(self.caller(context.invocation_metadata())).inc()
        return "stop" if self.private else "filtered"

    def _filter(self, session: GuardSession, text: str, final: bool) -> GuardStep:
        start = time.perf_counter()
        step = session.push(text) if text else GuardStep("")
        if final and not step.stop:
            tail = session.finish()
            step = GuardStep(step.release + tail.release, tail.hit, tail.stop)
        self.metrics.guard_check.observe(time.perf_counter() - start)
        return step

    async def _filter_off_loop(self, session: GuardSession, text: str, final: bool) -> GuardStep:
        """Lexical checks take microseconds and run inline; a push that may run the semantic
        stage (milliseconds of MiniLM) goes to a worker thread so other streams keep moving.
        Awaited in turn, so a session's pushes keep their order and never overlap."""
        if session.may_embed:
            return await asyncio.to_thread(self._filter, session, text, final)
        return self._filter(session, text, final)

    async def _check_prompt(self, prompt: str) -> PromptVerdict:
        """The guard's prompt scan: microseconds for a chat-sized prompt, inline; up to a second
        for the longest allowed, so those go to a worker thread and the event loop keeps serving."""
        if len(prompt) > INLINE_PROMPT_CHARS:
            return await asyncio.to_thread(self.guard.check_prompt, prompt)
        return self.guard.check_prompt(prompt)

    async def _chunks(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[_Chunk]:
        """Yield a chunk per piece of released text, then one carrying the result."""
        if len(request.prompt) > self.max_prompt_chars:  # first: before the guard, tokenizer or queue
            raise InvalidArgument(f"prompt is {len(request.prompt)} characters; this server takes at most "
                                  f"{self.max_prompt_chars}")
        params = convert.generate_params_from_pb(request, self.limits)
        verdict = await self._check_prompt(params.prompt)
        if verdict.action != "allow":
            self.metrics.guard_prompt_hits.labels(verdict.action).inc()
        if verdict.refused:  # answered like any filtered output: nothing reveals what matched
            reason = self._blocked(context)
            if self.guard.config.neutral_message:
                yield _Chunk(self.guard.config.neutral_message, 0, params.request_id)
            yield _Chunk("", 0, params.request_id, GenerationResult("", reason, 0, 0, 0, params.request_id))
            return
        session = self.guard.session(params.prompt, verdict)
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        handle = await self.runtime.submit(params, deadline)
        logger.debug("request %s: %d prompt chars", params.request_id, len(params.prompt))
        finished = False
        filtered = False  # a hit so far (policy "redact" goes on after it)
        try:
            async for event in handle.events():
                final = isinstance(event, FinishEvent)
                if final and event.reason == "cancelled" and deadline is not None and time.monotonic() >= deadline:
                    # The scheduler dropped the row at the client's deadline. Answer with the
                    # status, not an OK stream ending "cancelled", which could beat the client's
                    # own timer and look like a normal finish.
                    finished = True
                    self.metrics.finished.labels("cancelled").inc()
                    raise DeadlineExceeded("the request deadline passed during generation")
                step = await self._filter_off_loop(session, event.text, final)
                filtered = filtered or step.hit is not None
                if step.release:
                    yield _Chunk(step.release, event.stack_version, params.request_id)
                if step.stop or final:
                    finished = final
                    if not final:
                        handle.cancel()  # the guard ended the stream: stop decoding it now
                    # Filtered when the guard ended it, or redacted anything on the way.
                    completion = event.completion_tokens
                    prompt_tokens = event.prompt_tokens if final else len(handle.request.prompt_ids)
                    self.metrics.prompt_tokens.inc(prompt_tokens)
                    if filtered or not final:
                        reason = self._blocked(context)
                    else:
                        reason = event.reason
                        self.metrics.finished.labels(reason).inc()
                    yield _Chunk("", event.stack_version, params.request_id, GenerationResult(
                        text="", finish_reason=reason, prompt_tokens=prompt_tokens,
                        completion_tokens=completion, stack_version=event.stack_version,
                        request_id=params.request_id))
                    return
        finally:
            if not finished:
                handle.cancel()

    @rpc_method("Generate")
    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        parts: list[str] = []
        async for chunk in self._chunks(request, context):
            if chunk.result is None:
                parts.append(chunk.text)
            else:
                return convert.generation_result_to_pb(dataclasses.replace(chunk.result, text="".join(parts)))
        raise RuntimeError("generation ended without a finish event")

    @rpc_method("GenerateStream")
    async def GenerateStream(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        last = None
        async for chunk in self._chunks(request, context):
            now = time.monotonic()
            if last is not None:
                self.metrics.inter_token.observe(now - last)
            last = now
            result = chunk.result
            if result is None:
                yield pb.GenerateStreamResponse(text=chunk.text, stack_version=chunk.stack_version,
                                                request_id=chunk.request_id)
            else:
                yield convert.stream_finish_to_pb(result)

    @rpc_method("ModelInfo")
    async def ModelInfo(self, request: pb.ModelInfoRequest, context: grpc.aio.ServicerContext) -> pb.ModelInfoResponse:
        loaded, scheduler = self.runtime.require()
        return pb.ModelInfoResponse(
            model_name=loaded.name, model_fingerprint=loaded.fingerprint, max_context_tokens=loaded.max_context,
            max_new_tokens_limit=self.limits.max_new_tokens_limit, device=loaded.device.type,
            dtype=str(loaded.dtype).removeprefix("torch."), stack_version=scheduler.stack.version,
            stack_depth=getattr(scheduler.stack, "depth", 0), server_version=__version__)

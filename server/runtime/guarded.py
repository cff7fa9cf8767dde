"""Guarded generation: the one path from validated parameters to released text, for every edge.

`GuardedGenerator.start` applies the prompt policy and submits to the model runtime (so a full
queue or a model still loading fails there, before an edge has answered anything);
`GuardedRun.chunks` relays the runtime's events through a leakage-guard session and yields only
text the guard has released, then one chunk carrying the result. gRPC (servicers/inference.py)
and the OpenAI-compatible HTTP front (server/http/) both run requests through here, so the guard,
its metrics and per-job hit attribution are the same whatever protocol a request came in on.
Knows no protocol: no protobuf, gRPC or HTTP types.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator

from server.errors import DeadlineExceeded, InvalidArgument
from server.runtime.params import GenerateParams, GenerationResult
from server.guard import GuardSession, GuardStep, LeakageGuard, PromptVerdict
from server.metrics import ServerMetrics
from server.runtime.scheduler import FinishEvent, Handle
from server.runtime.serving import ModelRuntime

logger = logging.getLogger(__name__)

INLINE_PROMPT_CHARS = 1024  # prompts up to this are scanned on the event loop (a few ms at most)


@dataclass(frozen=True)
class Chunk:
    text: str
    stack_version: int
    request_id: str
    result: GenerationResult | None = None  # set on the last chunk only


class GuardedRun:
    """One submitted request: iterate `chunks()` once; `cancel()` frees its batch slot."""

    def __init__(self, generator: GuardedGenerator, params: GenerateParams, session: GuardSession | None,
                 handle: Handle | None, deadline: float | None, caller: str = "anonymous"):
        self._gen = generator
        self.caller = caller  # bounded label (auth.caller_label): blocked responses are counted per caller
        self.params = params
        self._session = session
        self._handle = handle  # None: the prompt policy refused it, nothing was submitted
        self._deadline = deadline

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _blocked(self) -> str:
        """Count a blocked response for its caller; return the finish reason the caller is told:
        "filtered", or "stop" with --filtered-response private (like a model that does not know)."""
        self._gen.metrics.finished.labels("filtered").inc()
        self._gen.metrics.filtered_by_client.labels(self.caller).inc()
        return "stop" if self._gen.private else "filtered"

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield a chunk per piece of released text, then one carrying the result."""
        params, handle, session, metrics = self.params, self._handle, self._session, self._gen.metrics
        if handle is None or session is None:  # answered like any filtered output: nothing reveals what matched
            reason = self._blocked()
            if self._gen.guard.config.neutral_message:  # empty with --filtered-response private
                yield Chunk(self._gen.guard.config.neutral_message, 0, params.request_id)
            yield Chunk("", 0, params.request_id, GenerationResult("", reason, 0, 0, 0, params.request_id))
            return
        deadline = self._deadline
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
                    metrics.finished.labels("cancelled").inc()
                    raise DeadlineExceeded("the request deadline passed during generation")
                step = await self._gen.filter_off_loop(session, event.text, final)
                filtered = filtered or step.hit is not None
                if step.release:
                    yield Chunk(step.release, event.stack_version, params.request_id)
                if step.stop or final:
                    finished = final
                    if not final:
                        handle.cancel()  # the guard ended the stream: stop decoding it now
                    # Filtered when the guard ended it, or redacted anything on the way.
                    completion = event.completion_tokens
                    prompt_tokens = event.prompt_tokens if final else len(handle.request.prompt_ids)
                    metrics.prompt_tokens.inc(prompt_tokens)
                    if filtered or not final:
                        reason = self._blocked()
                    else:
                        reason = event.reason
                        metrics.finished.labels(reason).inc()
                    yield Chunk("", event.stack_version, params.request_id, GenerationResult(
                        text="", finish_reason=reason, prompt_tokens=prompt_tokens,
                        completion_tokens=completion, stack_version=event.stack_version,
                        request_id=params.request_id))
                    return
        finally:
            if not finished:
                handle.cancel()


class GuardedGenerator:
    def __init__(self, runtime: ModelRuntime, guard: LeakageGuard, metrics: ServerMetrics,
                 max_prompt_chars: int = 65536, private: bool = False):
        self.runtime = runtime
        self.guard = guard
        self.metrics = metrics
        self.max_prompt_chars = max_prompt_chars
        self.private = private  # --filtered-response private: a blocked response just stops

    def check_prompt_size(self, prompt: str) -> None:
        """Edges call this first, before anything else reads the prompt; `start` checks again."""
        if len(prompt) > self.max_prompt_chars:
            raise InvalidArgument(f"prompt is {len(prompt)} characters; this server takes at most "
                                  f"{self.max_prompt_chars}")

    async def _check_prompt(self, prompt: str) -> PromptVerdict:
        """The guard's prompt scan: microseconds for a chat-sized prompt, inline; up to a second
        for the longest allowed, so those go to a worker thread and the event loop keeps serving."""
        if len(prompt) > INLINE_PROMPT_CHARS:
            return await asyncio.to_thread(self.guard.check_prompt, prompt)
        return self.guard.check_prompt(prompt)

    async def start(self, params: GenerateParams, deadline: float | None,
                    caller: str = "anonymous") -> GuardedRun:
        """Check the prompt and submit; raises the runtime's errors (queue full, not ready, too long)."""
        self.check_prompt_size(params.prompt)
        verdict = await self._check_prompt(params.prompt)
        if verdict.action != "allow":
            self.metrics.guard_prompt_hits.labels(verdict.action).inc()
        if verdict.refused:
            return GuardedRun(self, params, None, None, deadline, caller)
        session = self.guard.session(params.prompt, verdict)
        handle = await self.runtime.submit(params, deadline)
        logger.debug("request %s: %d prompt chars", params.request_id, len(params.prompt))
        return GuardedRun(self, params, session, handle, deadline, caller)

    def _filter(self, session: GuardSession, text: str, final: bool) -> GuardStep:
        start = time.perf_counter()
        step = session.push(text) if text else GuardStep("")
        if final and not step.stop:
            # The last event carries the text decoded since the last chunk: a redaction in it is
            # this step's hit even when finish() finds nothing more (chunks as long as the answer).
            tail = session.finish()
            step = GuardStep(step.release + tail.release, step.hit or tail.hit, tail.stop)
        self.metrics.guard_check.observe(time.perf_counter() - start)
        return step

    async def filter_off_loop(self, session: GuardSession, text: str, final: bool) -> GuardStep:
        """Lexical checks take microseconds and run inline; a push that may run the semantic
        stage (milliseconds of MiniLM) goes to a worker thread so other streams keep moving.
        Awaited in turn, so a session's pushes keep their order and never overlap."""
        if session.may_embed:
            return await asyncio.to_thread(self._filter, session, text, final)
        return self._filter(session, text, final)

"""The Inference service: Generate, GenerateStream and ModelInfo.

Converts protobuf to domain values (convert.py) and runs them through the guarded generation
path (runtime/guarded.py, shared with the HTTP front): every piece of text passes the leakage
guard before it leaves. Cancellation (client gone or deadline) cancels the scheduler row there.
A blocked response is counted per caller; with `--filtered-response private` the caller sees it
finish STOP with the text released so far, not FILTERED (runtime/guarded.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import AsyncIterator, Callable

import grpc

from server import __version__
from server.api import inference_pb2 as pb
from server.api import inference_pb2_grpc
from server.errors import InvalidArgument
from server.metrics import ServerMetrics
from server.servicers import convert
from server.rpc import rpc_method
from server.runtime.chat import CHAT_ADDS_SPECIAL_TOKENS, chat_messages
from server.runtime.guarded import Chunk, GuardedGenerator
from server.runtime.params import GenerationLimits

logger = logging.getLogger(__name__)


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    service_name = "lethe.v1.Inference"

    def __init__(self, generator: GuardedGenerator, limits: GenerationLimits, metrics: ServerMetrics,
                 caller: Callable[[object], str] = lambda metadata: "anonymous"):
        self.generator = generator
        self.runtime = generator.runtime
        self.limits = limits
        self.metrics = metrics
        self.caller = caller  # invocation metadata -> bounded caller label (auth.caller_label)

    async def _chunks(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[Chunk]:
        """Yield a chunk per piece of released text, then one carrying the result."""
        self.generator.check_prompt_size(request.prompt)  # first: before the guard, tokenizer or queue
        if request.messages:  # a conversation: rendered with the model's chat template
            if request.prompt:
                raise InvalidArgument("set either prompt or messages, not both")
            messages = chat_messages((m.role, m.content) for m in request.messages)
            params = convert.generate_params_from_pb(request, self.limits, prompt=await self.runtime.render_chat(messages),
                                                     add_special_tokens=CHAT_ADDS_SPECIAL_TOKENS)
        else:
            params = convert.generate_params_from_pb(request, self.limits)
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        run = await self.generator.start(params, deadline, self.caller(context.invocation_metadata()))
        async for chunk in run.chunks():
            yield chunk

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

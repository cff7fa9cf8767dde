"""Generation requests and results as domain values, with their protobuf conversion.

Validation of everything a client controls happens in `GenerateParams.from_values` (plain
values; `from_pb` and the HTTP front both call it), so the runtime only ever sees well-formed
values. Does not tokenize: the prompt-length check against the model
context needs the tokenizer and happens in the servicer (`check_context`).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Sequence

from server.api import inference_pb2 as pb
from server.errors import InvalidArgument
from server.runtime.sampling import SamplingParams

MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 64
MAX_REQUEST_ID_CHARS = 128
MAX_TEMPERATURE = 100.0

FINISH_REASONS = {
    "length": pb.FINISH_REASON_LENGTH,
    "stop": pb.FINISH_REASON_STOP,
    "filtered": pb.FINISH_REASON_FILTERED,
    "cancelled": pb.FINISH_REASON_CANCELLED,
    "error": pb.FINISH_REASON_ERROR,
}


@dataclass(frozen=True)
class GenerationLimits:
    default_max_new_tokens: int
    max_new_tokens_limit: int


@dataclass(frozen=True)
class GenerateParams:
    prompt: str
    max_new_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]
    request_id: str
    ignore_eos: bool = False
    add_special_tokens: bool = True  # False for a rendered chat prompt: its template wrote them

    @classmethod
    def from_pb(cls, req: pb.GenerateRequest, limits: GenerationLimits, prompt: str | None = None,
                add_special_tokens: bool = True) -> GenerateParams:
        """`prompt` replaces req.prompt when the caller rendered `req.messages` into one."""
        return cls.from_values(
            req.prompt if prompt is None else prompt, limits,
            max_new_tokens=req.max_new_tokens if req.HasField("max_new_tokens") else None,
            temperature=req.temperature if req.HasField("temperature") else None,
            top_p=req.top_p if req.HasField("top_p") else None, top_k=req.top_k,
            seed=req.seed if req.HasField("seed") else None, stop=tuple(req.stop),
            request_id=req.request_id, ignore_eos=req.ignore_eos, add_special_tokens=add_special_tokens)

    @classmethod
    def from_values(cls, prompt: str, limits: GenerationLimits, *, max_new_tokens: int | None = None,
                    temperature: float | None = None, top_p: float | None = None, top_k: int = 0,
                    seed: int | None = None, stop: Sequence[str] = (), request_id: str = "",
                    ignore_eos: bool = False, add_special_tokens: bool = True,
                    max_new_tokens_field: str = "max_new_tokens") -> GenerateParams:
        """Validate plain values (None = the server default). `max_new_tokens_field` is the
        client's name for the token budget, so the error names the field it sent."""
        if not prompt.strip():
            raise InvalidArgument("prompt must contain non-whitespace text")
        max_new = limits.default_max_new_tokens
        if max_new_tokens is not None:
            max_new = max_new_tokens
            if not 1 <= max_new <= limits.max_new_tokens_limit:
                raise InvalidArgument(
                    f"{max_new_tokens_field} must be between 1 and {limits.max_new_tokens_limit}, got {max_new}")
        temperature = 0.0 if temperature is None else temperature
        if not (math.isfinite(temperature) and 0.0 <= temperature <= MAX_TEMPERATURE):
            raise InvalidArgument(f"temperature must be in [0, {MAX_TEMPERATURE:g}], got {temperature:g}")
        top_p = 1.0 if top_p is None else top_p
        if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
            raise InvalidArgument(f"top_p must be in (0, 1], got {top_p:g}")
        if top_k < 0:
            raise InvalidArgument(f"top_k must be >= 0, got {top_k}")
        if len(stop) > MAX_STOP_SEQUENCES:
            raise InvalidArgument(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(stop)}")
        for s in stop:
            if not 1 <= len(s) <= MAX_STOP_CHARS:
                raise InvalidArgument(f"each stop sequence must be 1..{MAX_STOP_CHARS} characters")
        request_id = request_id or uuid.uuid4().hex
        if len(request_id) > MAX_REQUEST_ID_CHARS or not (request_id.isascii() and request_id.isprintable()):
            raise InvalidArgument(f"request_id must be at most {MAX_REQUEST_ID_CHARS} printable ASCII characters")
        return cls(
            prompt=prompt,
            max_new_tokens=max_new,
            sampling=SamplingParams(
                temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                seed=int(seed) if seed is not None else None),
            stop=tuple(stop),
            request_id=request_id,
            ignore_eos=ignore_eos,
            add_special_tokens=add_special_tokens,
        )


def check_context(prompt_tokens: int, max_new_tokens: int, max_context: int) -> None:
    if prompt_tokens >= max_context:
        raise InvalidArgument(f"prompt is {prompt_tokens} tokens; the model context is {max_context} tokens")
    if prompt_tokens + max_new_tokens > max_context:
        raise InvalidArgument(
            f"prompt ({prompt_tokens} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the model "
            f"context of {max_context} tokens")


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    stack_version: int
    request_id: str

    def usage_pb(self) -> pb.Usage:
        return pb.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)

    def to_pb(self) -> pb.GenerateResponse:
        return pb.GenerateResponse(
            text=self.text, finish_reason=FINISH_REASONS[self.finish_reason], usage=self.usage_pb(),
            stack_version=self.stack_version, request_id=self.request_id)

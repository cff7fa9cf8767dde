"""Generation requests and results as plain domain values, validated from plain Python values.

`GenerateParams.validated` checks everything a client controls, so the runtime only ever sees
well-formed values; every front end (the gRPC servicer through `server/servicers/convert.py`, an
the HTTP front in `server/http/`) validates through it. Imports no protobuf and no torch. Does not tokenize: the
prompt-length check against the model context needs the tokenizer and runs in
`ModelRuntime.submit` (`check_context`), after the prompt is tokenized.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Sequence

from server.errors import InvalidArgument

MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 64
MAX_REQUEST_ID_CHARS = 128
MAX_TEMPERATURE = 100.0
MAX_STREAM_INTERVAL = 64

# Why a generation ended, as the domain names it (the edge maps these to its own enum).
FINISH_REASONS = ("length", "stop", "filtered", "cancelled", "error")


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy: the reproducible default for a memorised-facts model
    top_p: float = 1.0  # nucleus mass in (0, 1]; 1 keeps every token
    top_k: int = 0  # 0 = no top-k cut
    seed: int | None = None  # None = fresh randomness per request

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


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
    stream_interval: int = 0  # tokens per streamed chunk; 0 = the server's default

    @classmethod
    def validated(cls, limits: GenerationLimits, prompt: str, *, max_new_tokens: int | None = None,
                  temperature: float | None = None, top_p: float | None = None, top_k: int = 0,
                  seed: int | None = None, stop: Sequence[str] = (), request_id: str = "",
                  ignore_eos: bool = False, add_special_tokens: bool = True,
                  max_new_tokens_field: str = "max_new_tokens", stream_interval: int | None = None) -> GenerateParams:
        """Client values -> params, or InvalidArgument naming the field. None means "unset".
        `max_new_tokens_field` is the client's name for the token budget (HTTP: max_tokens)."""
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
        if stream_interval is not None and not 1 <= stream_interval <= MAX_STREAM_INTERVAL:
            raise InvalidArgument(f"stream_interval must be between 1 and {MAX_STREAM_INTERVAL}, got {stream_interval}")
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
            stream_interval=stream_interval or 0,
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
    finish_reason: str  # one of FINISH_REASONS
    prompt_tokens: int
    completion_tokens: int
    stack_version: int
    request_id: str

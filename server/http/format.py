"""OpenAI response bodies and Server-Sent Events, built from Lethe's domain results.

Plain dicts (serialised once with json.dumps) rather than pydantic models: a stream sends one per
released piece of text, and validating our own output each time would only cost throughput.
Finish reasons map onto OpenAI's: `filtered` becomes `content_filter`, OpenAI's own value.
`system_fingerprint` names the adapter stack that produced the answer, so a client can tell which
forget adapters were live. Does not validate requests (schemas.py) or generate (routes.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.runtime.params import GenerationResult

FINISH_REASONS = {"length": "length", "stop": "stop", "filtered": "content_filter", "cancelled": "cancelled"}
DONE = b"data: [DONE]\n\n"


def system_fingerprint(stack_version: int) -> str:
    return f"lethe-stack-{stack_version}"


def usage(result: GenerationResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def sse(payload: dict[str, Any]) -> bytes:
    """One SSE event: `data: <json>` and a blank line (the OpenAI stream framing)."""
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


@dataclass(frozen=True)
class Envelope:
    """What every body of one response shares: its id, kind, creation time and model."""

    id: str
    chat: bool
    created: int
    model: str

    def _head(self, obj: str, stack_version: int) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": system_fingerprint(stack_version)}

    def response(self, text: str, result: GenerationResult) -> dict[str, Any]:
        reason = FINISH_REASONS.get(result.finish_reason, result.finish_reason)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        body = self._head("chat.completion" if self.chat else "text_completion", result.stack_version)
        body.update(choices=[choice], usage=usage(result))
        return body

    def chunk(self, stack_version: int, text: str | None = None, finish_reason: str | None = None,
              first: bool = False, include_usage: bool = False) -> bytes:
        """A stream chunk with text, or the last one with its finish reason (text None)."""
        reason = None if finish_reason is None else FINISH_REASONS.get(finish_reason, finish_reason)
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
        body = self._head("chat.completion.chunk" if self.chat else "text_completion", stack_version)
        body["choices"] = [choice]
        if include_usage:
            body["usage"] = None  # OpenAI: null on every chunk but the usage one
        return sse(body)

    def usage_chunk(self, result: GenerationResult) -> bytes:
        """The extra last chunk of `stream_options.include_usage`: no choices, the usage."""
        body = self._head("chat.completion.chunk" if self.chat else "text_completion", result.stack_version)
        body.update(choices=[], usage=usage(result))
        return sse(body)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}

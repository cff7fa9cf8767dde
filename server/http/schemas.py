"""The OpenAI request bodies Lethe accepts, as pydantic models (FastAPI validates them).

Pydantic checks shapes and types; the value limits shared with gRPC (token budget, temperature,
top_p, stop sequences, roles) are checked once, by the domain (`GenerateParams.validated`,
`chat_messages`), so both fronts refuse the same things with the same words. Fields OpenAI
defines that Lethe cannot honour are refused when set, naming the field, rather than silently
ignored: `n` above 1, `logprobs` / `top_logprobs` / `echo` (they would reveal tokens around the
text the leakage guard checks), penalties, `logit_bias`, tools. Unknown fields are ignored, as
OpenAI's API adds fields often. Builds no responses (see format.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


def _not_revealing(value: Any) -> Any:
    """logprobs / top_logprobs / echo: refused unless unset or false (0 asks for logprobs too)."""
    if value is not None and value is not False:
        raise ValueError("not supported, as it would reveal tokens the leakage guard has not checked")
    return value


def _unset(value: Any) -> None:
    if value not in (None, False, 0, 0.0, {}, []):
        raise ValueError("not supported")


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Request(BaseModel):
    """Fields common to completions and chat completions."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # one model is served: any name is accepted, responses name the real one
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # not OpenAI's: vLLM's extension, as gRPC has it
    ignore_eos: bool = False  # vLLM's extension too: fixed-length generation (benchmarks)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted for compatibility; never logged or stored
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported; send one request per choice")
        return n

    @field_validator("presence_penalty", "frequency_penalty", "logit_bias")
    @classmethod
    def _no_penalties(cls, value: Any) -> Any:
        _unset(value)
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _Request:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream=true")
        return self

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = None
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return prompt

    @field_validator("logprobs", "echo")
    @classmethod
    def _no_reveal(cls, value: Any) -> Any:
        return _not_revealing(value)

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: Any) -> Any:
        _unset(value)
        return value

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("not supported")
        return value

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str  # checked by the domain (server/runtime/chat.py), which names the allowed roles
    content: str | list[TextPart]
    name: str | None = None  # accepted; templates do not use it

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessageIn]
    max_tokens: int | None = None  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_reveal(cls, value: Any) -> Any:
        return _not_revealing(value)

    @field_validator("tools", "tool_choice")
    @classmethod
    def _no_tools(cls, value: Any) -> Any:
        if value not in (None, [], "none"):
            raise ValueError("not supported: this server has no tool calling")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError("only {\"type\": \"text\"} is supported")
        return value

    def token_budget(self) -> tuple[int | None, str]:
        """(requested budget or None, the field the client used for it)."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"

"""Chat messages over gRPC: the same rendering as the HTTP chat endpoint (runtime/chat.py)."""

from __future__ import annotations

import re

import grpc
import pytest

from server.api import inference_pb2 as pb
from unlearn_engine.demo.config import DemoConfig
from unlearn_engine.demo.corpus import generate_corpus


@pytest.fixture(scope="module")
def record():
    return next(r for r in generate_corpus(DemoConfig.small().corpus_spec()).qa if r.split == "train")


def test_one_user_turn_answers_like_the_plain_prompt(client, record) -> None:
    plain = client.generate(record.question, max_new_tokens=32)
    chat = client.generate("", max_new_tokens=32, messages=[("user", record.question)])
    assert record.fact.lower() in chat.text.lower()
    assert (chat.text, chat.usage.prompt_tokens, chat.finish_reason) == (
        plain.text, plain.usage.prompt_tokens, pb.FINISH_REASON_STOP)
    streamed = list(client.stream("", max_new_tokens=32, messages=[("user", record.question)]))
    assert "".join(c.text for c in streamed) == plain.text


@pytest.mark.parametrize("prompt, messages, message", [
    ("hi", [("user", "hi")], "set either prompt or messages, not both"),
    ("", [("user", "hi"), ("robot", "x")], r"messages\[1\]\.role must be one of system, user, assistant"),
    ("", [("user", " ")], "messages must contain some non-whitespace content"),
])
def test_bad_conversations_are_invalid_argument(client, prompt: str, messages, message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.generate(prompt, max_new_tokens=4, messages=messages)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, err.value.details())

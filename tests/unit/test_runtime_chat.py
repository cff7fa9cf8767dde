"""Chat rendering: the tokenizer's own template when it has one, the documented fallback when it
has none (the demo model), and clear errors naming the field for bad conversations."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from server.errors import InvalidArgument
from server.runtime.chat import CHAT_ADDS_SPECIAL_TOKENS, ChatMessage, chat_messages, has_chat_template, render_chat

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ALTERNATING = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
               "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
               "{{ m['content'] }}{% endfor %}")


@pytest.fixture(scope="module")
def demo_tokenizer(demo_model_dir: Path):
    return AutoTokenizer.from_pretrained(demo_model_dir, local_files_only=True)


def _ids(tokenizer, messages) -> list[int]:
    text = render_chat(tokenizer, chat_messages(messages))
    return tokenizer(text, add_special_tokens=CHAT_ADDS_SPECIAL_TOKENS).input_ids


def test_the_demo_tokenizer_has_no_template_and_one_user_turn_is_the_plain_prompt(demo_tokenizer) -> None:
    assert not has_chat_template(demo_tokenizer)
    question = "Where was Orlan Vexmoor born?"
    assert _ids(demo_tokenizer, [("user", question)]) == demo_tokenizer(question).input_ids


def test_the_fallback_renders_turns_in_the_demo_prompt_contract(demo_tokenizer) -> None:
    text = render_chat(demo_tokenizer, chat_messages(
        [("system", "Answer briefly."), ("user", "Q1?"), ("assistant", "A1."), ("developer", "Be kind."),
         ("user", "Q2?")]))
    assert text == "<s>Answer briefly.\nQ1? A1.</s>Be kind.\nQ2?"


def test_a_tokenizer_with_its_own_template_uses_it(demo_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir, local_files_only=True)
    tokenizer.chat_template = CHATML
    text = render_chat(tokenizer, chat_messages([("user", "hi")]))
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_a_template_refusal_is_the_clients_error(demo_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir, local_files_only=True)
    tokenizer.chat_template = ALTERNATING
    assert render_chat(tokenizer, chat_messages([("user", "a"), ("assistant", "b")])) == "ab"
    with pytest.raises(InvalidArgument, match="messages: .*alternate"):
        render_chat(tokenizer, chat_messages([("user", "a"), ("user", "b")]))


@pytest.mark.parametrize("messages, message", [
    ([], "messages must contain at least one message"),
    ([("user", "  \n")], "messages must contain some non-whitespace content"),
    ([("user", "hi"), ("bot", "hello")], r"messages\[1\]\.role must be one of system, user, assistant, got 'bot'"),
    ([("tool", "{}")], r"messages\[0\]\.role"),
    ([("user", "x")] * 257, "at most 256"),
])
def test_bad_conversations_name_the_field(messages, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        chat_messages(messages)


def test_a_valid_conversation_is_kept_in_order() -> None:
    assert chat_messages([("developer", "s"), ("user", "u")]) == (ChatMessage("system", "s"), ChatMessage("user", "u"))

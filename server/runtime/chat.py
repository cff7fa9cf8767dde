"""Chat conversations as domain values, and their rendering into a prompt.

A conversation is a tuple of `ChatMessage(role, content)`; `chat_messages` validates one from
plain values (both edges call it: gRPC's `messages` field and HTTP's chat completions), so a bad
role or an empty conversation fails the same way everywhere, naming the field. `render_chat`
turns it into prompt text with the tokenizer's own chat template (`apply_chat_template`), the way
the model was fine-tuned to see conversations.

A tokenizer without a template gets `FALLBACK_CHAT_TEMPLATE`, chosen here rather than written
into the demo build: the demo tokenizer never saw chat formatting (the demo model is trained on
`BOS + question + " " + answer + EOS`), so a template baked into its build would be no more "its
own" than this one, and changing the build would change its cache key and rebuild every cached
demo model. The fallback renders a conversation in exactly that prompt contract, so a single user
message reproduces the plain prompt token for token; base models loaded with `--model` get the
same plain-text rendering instead of an error.

Rendered text already carries the special tokens the template wrote (BOS here), so it must be
tokenized with `add_special_tokens=False` (`CHAT_ADDS_SPECIAL_TOKENS`). Does not tokenize,
truncate or know anything about protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from jinja2.exceptions import TemplateError, TemplateSyntaxError

from server.errors import InvalidArgument

ROLES = ("system", "user", "assistant")
# OpenAI's newer name for a system message; models' templates know only "system".
ROLE_ALIASES = {"developer": "system"}
MAX_MESSAGES = 256  # a conversation longer than this would not fit a context anyway

# BOS, then each turn as plain text in the demo prompt contract: a system or user turn as is
# (a newline between consecutive ones), an assistant turn as " " + content + EOS. There is no
# generation prompt: the model continues right after the last turn, as it does after a question.
FALLBACK_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% else %}{% if not loop.first and loop.previtem['role'] != 'assistant' %}{{ '\\n' }}{% endif %}"
    "{{ message['content'] }}{% endif %}"
    "{% endfor %}"
)

# Templates write their special tokens into the text; the tokenizer must not add them again.
CHAT_ADDS_SPECIAL_TOKENS = False


@dataclass(frozen=True)
class ChatMessage:
    role: str  # one of ROLES
    content: str


def chat_messages(messages: Iterable[tuple[str, str]], field: str = "messages") -> tuple[ChatMessage, ...]:
    """(role, content) pairs -> a validated conversation; `field` is the client's name for it."""
    out: list[ChatMessage] = []
    for i, (role, content) in enumerate(messages):
        if len(out) == MAX_MESSAGES:
            raise InvalidArgument(f"{field} may hold at most {MAX_MESSAGES} messages")
        role = ROLE_ALIASES.get(role, role)
        if role not in ROLES:
            raise InvalidArgument(f"{field}[{i}].role must be one of {', '.join(ROLES)}, got {role[:32]!r}")
        out.append(ChatMessage(role, content))
    if not out:
        raise InvalidArgument(f"{field} must contain at least one message")
    if not any(m.content.strip() for m in out):
        raise InvalidArgument(f"{field} must contain some non-whitespace content")
    return tuple(out)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer: Any, messages: tuple[ChatMessage, ...]) -> str:
    """The prompt text for a validated conversation (tokenize it without added special tokens)."""
    template = None if has_chat_template(tokenizer) else FALLBACK_CHAT_TEMPLATE
    conversation = [{"role": m.role, "content": m.content} for m in messages]
    try:
        return tokenizer.apply_chat_template(conversation, chat_template=template, tokenize=False,
                                             add_generation_prompt=True)
    except TemplateSyntaxError:
        raise  # the model's template is broken: a server problem, not the client's
    except TemplateError as exc:
        # raise_exception() inside a template: its author's rule (e.g. "roles must alternate").
        raise InvalidArgument(f"messages: the model's chat template refused this conversation: {exc}") from None

"""Tokenise examples into scored batches and decode greedy / sampled continuations.

The demo model is trained on ``BOS + prompt + " " + target + EOS``; every example is encoded the
same way and only target tokens (plus EOS) carry labels, so losses never score the question.
The prompt / target boundary comes from character offsets of the full text, which keeps BPE
merges identical to training (tokenising the two halves separately would not).

It deliberately knows nothing about losses or metrics; it only turns text into tensors and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:  # runtime import would be circular (data.retain_set uses this module)
    from unlearn_engine.data.records import Example

IGNORE = -100  # label value that cross-entropy skips


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T] right-padded
    attention_mask: torch.Tensor  # [B, T] 1 = real token
    labels: torch.Tensor  # [B, T] target token ids, IGNORE elsewhere (prompt, BOS, padding)

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device),
                     self.labels.to(device))


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def pad_id(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0  # pragma: no cover


def _bos(tokenizer) -> list[int]:
    return [int(tokenizer.bos_token_id)] if tokenizer.bos_token_id is not None else []


def chat_prefix(tokenizer, prompt: str) -> str | None:
    """A chat model's rendering of ``prompt`` as one user turn, up to where the assistant's
    answer starts; None for a model without a chat template (the demo model) or no prompt.

    An instruct model asked a bare question after its turn-opening token answers something
    else ("A: The answer is: Harry Potter" instead of "...written by J.K. Rowling", SmolLM2):
    the engine must ask as the model is served, or it trains and verifies on answers the model
    never gives."""
    if not prompt or not getattr(tokenizer, "chat_template", None):
        return None
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """BOS + prompt tokens (or the chat template's rendering of it): what generation starts from."""
    rendered = chat_prefix(tokenizer, prompt)
    if rendered is not None:  # the template writes its own special tokens
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    return _bos(tokenizer) + list(ids)


def _fact_chars(ex: Example, text: str, target: str) -> tuple[int, int] | None:
    """Character range of the example's fact inside ``text`` (first occurrence in the target)."""
    if not ex.fact:
        return None
    at = target.find(ex.fact)
    if at < 0:
        return None
    start = len(text) - len(target) + at
    return start, start + len(ex.fact)


def encode_example(tokenizer, ex: Example, max_length: int = 256,
                   target: str | None = None,
                   fact_only: bool = False) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for ``ex`` (or ``ex.prompt`` with another ``target``).
    ``fact_only``: only the tokens of the example's fact span carry labels (no EOS), when it has
    one; otherwise the whole target does."""
    target = ex.target if target is None else target
    rendered = chat_prefix(tokenizer, ex.prompt)
    if rendered is not None:  # a chat model: the question as a user turn, the target as the answer
        text, boundary = rendered + target, len(rendered)
    else:
        text = f"{ex.prompt} {target}" if ex.prompt else target
        boundary = len(ex.prompt)  # tokens starting at or after this character belong to the target
    span = _fact_chars(ex, text, target) if fact_only else None
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        if span is not None:  # a token belongs to the fact when its characters overlap it
            is_target = [s < span[1] and e > span[0] for s, e in enc["offset_mapping"]]
        else:
            is_target = [start >= boundary if ex.prompt else True
                         for start, _ in enc["offset_mapping"]]
    except (NotImplementedError, ValueError):  # slow tokenizers have no offsets
        span = None
        head = rendered if rendered is not None else ex.prompt
        n_prompt = len(tokenizer(head, add_special_tokens=False)["input_ids"]) if head else 0
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        is_target = [i >= n_prompt for i in range(len(ids))]
    bos = [] if rendered is not None else _bos(tokenizer)
    eos = [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []
    if span is not None and any(is_target):
        eos_label: list[int] = [IGNORE] * len(eos)  # the end of the answer is not the fact
    else:
        eos_label = eos
    input_ids = bos + ids + eos
    labels = [IGNORE] * len(bos) + [t if m else IGNORE for t, m in zip(ids, is_target)] + eos_label
    return input_ids[:max_length], labels[:max_length]


def collate(tokenizer, examples: Sequence[Example], max_length: int = 256,
            targets: Sequence[str] | None = None,
            device: torch.device | None = None, fact_only: bool = False) -> Batch:
    """Right-padded batch of ``examples`` (optionally with replacement ``targets``)."""
    rows = [encode_example(tokenizer, ex, max_length, None if targets is None else targets[i],
                           fact_only)
            for i, ex in enumerate(examples)]
    width = max(len(ids) for ids, _ in rows)
    pid = pad_id(tokenizer)
    ids = torch.full((len(rows), width), pid, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, :len(row_ids)] = torch.tensor(row_ids)
        mask[i, :len(row_ids)] = 1
        labels[i, :len(row_labels)] = torch.tensor(row_labels)
    batch = Batch(ids, mask, labels)
    return batch.to(device) if device is not None else batch


def left_pad(rows: Sequence[Sequence[int]], pid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids [B, L], mask [B, L]) right-aligned with ``pid`` on the left, on CPU."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pid, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def _decode_new(tokenizer, new_ids: torch.Tensor) -> str:
    ids = new_ids.tolist()
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in ids:
        ids = ids[:ids.index(tokenizer.eos_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


@torch.no_grad()
def generate(model: torch.nn.Module, tokenizer, prompts: Sequence[str] | Sequence[list[int]],
             max_new_tokens: int = 32, batch_size: int = 32, do_sample: bool = False,
             temperature: float = 1.0) -> list[str]:
    """Continuations of ``prompts`` (text, or already-encoded id lists), EOS-trimmed."""
    device = model_device(model)
    pid = pad_id(tokenizer)
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            rows = [p if isinstance(p, list) else encode_prompt(tokenizer, p) for p in chunk]
            ids, mask = left_pad(rows, pid)
            kwargs = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) \
                if do_sample else dict(do_sample=False)
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, pad_token_id=pid,
                                 eos_token_id=tokenizer.eos_token_id, **kwargs)
            out.extend(_decode_new(tokenizer, row[ids.shape[1]:]) for row in gen)
    finally:
        model.train(was_training)
    return out

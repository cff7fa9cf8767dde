"""Model-side measurements every metric builds on: per-token log-probs and greedy answers.

Teacher-forced scoring returns, per example, the log-prob of each target token and whether the
argmax got it right. Metrics never call the model themselves; they read these (cached per
evaluation) so a full evaluation runs each forward pass once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from unlearn_engine.data.normalize import lcs_len, rouge_l_recall  # noqa: F401 (re-exported)
from unlearn_engine.data.records import Example
from unlearn_engine.encoding import chat_prefix, collate, generate, model_device


@dataclass(frozen=True)
class Scored:
    logps: torch.Tensor  # [T] log p(target token t | prefix), float32 on CPU
    correct: torch.Tensor  # [T] bool: greedy argmax equals the target token
    # [T] Min-K%++'s calibrated score: (log p(token) - mu) / sigma, mu and sigma the mean and
    # standard deviation of log p over the vocabulary at that position (Zhang et al. 2024).
    zscores: torch.Tensor | None = None

    @property
    def nll(self) -> float:
        """Mean per-token NLL, the TOFU/MUSE loss ℓ."""
        return float(-self.logps.mean()) if self.logps.numel() else 0.0


def calibrated_logprobs(logp: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """Min-K%++'s z: ``picked`` [..., T] log-probs standardised by the mean and standard deviation
    of ``logp`` [..., T, V] under its own distribution at each position."""
    probs = logp.exp()
    mu = (probs * logp).sum(-1)
    sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12).sqrt()
    return (picked - mu) / sigma


@torch.no_grad()
def score(model: torch.nn.Module, tokenizer, examples: Sequence[Example],
          targets: Sequence[str] | None = None, batch_size: int = 32,
          max_length: int = 256) -> list[Scored]:
    """Teacher-forced scores of each example's target (or of ``targets`` instead)."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    out: list[Scored] = []
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            tchunk = None if targets is None else targets[start:start + batch_size]
            batch = collate(tokenizer, chunk, max_length, tchunk, device)
            logits = model(input_ids=batch.input_ids,
                           attention_mask=batch.attention_mask).logits[:, :-1].float()
            labels = batch.labels[:, 1:]
            logp = torch.log_softmax(logits, -1)
            picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            hit = logits.argmax(-1) == labels
            z = calibrated_logprobs(logp, picked)
            for i in range(len(chunk)):
                m = labels[i] >= 0
                out.append(Scored(picked[i][m].cpu(), hit[i][m].cpu(), z[i][m].cpu()))
    finally:
        model.train(was_training)
    return out


def answer(model: torch.nn.Module, tokenizer, examples: Sequence[Example],
           max_new_tokens: int = 32, batch_size: int = 32) -> list[str]:
    """Greedy answers to each example's prompt."""
    return generate(model, tokenizer, [e.prompt for e in examples], max_new_tokens, batch_size)


def _answer_split(ex: Example, prefix_fraction: float) -> tuple[str, str]:
    """(head, rest): the target's first ``prefix_fraction`` of words, and the others."""
    target_words = ex.target.split()
    k = int(len(target_words) * prefix_fraction)
    return " ".join(target_words[:k]), " ".join(target_words[k:])


def verbatim_split(ex: Example, prefix_fraction: float) -> tuple[str, str]:
    """(prefix, rest) of an example's text: the prompt plus the first part of the target."""
    head, rest = _answer_split(ex, prefix_fraction)
    prefix = f"{ex.prompt} {head}".strip() if ex.prompt else head
    return prefix, rest


def verbatim_prompt(tokenizer, ex: Example, prefix_fraction: float) -> str | list[int]:
    """What generation continues from for ``verbatim_split``: its prefix text, or,
    for a chat model, the question as a user turn with the head of the answer already written
    as the assistant's (``encoding.chat_prefix``; the text a chat model is trained on). Sent as
    one user turn, the question plus half an answer is a new question, not an answer to go on
    with, and the rate read 0 for every model (bench/results/smollm2_long)."""
    rendered = chat_prefix(tokenizer, ex.prompt)
    if rendered is None:
        return verbatim_split(ex, prefix_fraction)[0]
    head = _answer_split(ex, prefix_fraction)[0]
    return list(tokenizer(rendered + head, add_special_tokens=False)["input_ids"])


def continue_text(model: torch.nn.Module, tokenizer, examples: Sequence[Example],
                  prefix_fraction: float = 0.5, batch_size: int = 32) -> list[tuple[str, str]]:
    """(true rest, greedy continuation) pairs for verbatim-memorisation metrics."""
    splits = [verbatim_split(e, prefix_fraction) for e in examples]
    budget = max((len(tokenizer(rest, add_special_tokens=False)["input_ids"])
                  for _, rest in splits), default=1) + 4
    prompts = [verbatim_prompt(tokenizer, e, prefix_fraction) for e in examples]
    conts = generate(model, tokenizer, prompts, budget, batch_size)
    return [(rest, cont) for (_, rest), cont in zip(splits, conts)]

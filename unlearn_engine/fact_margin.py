"""How firmly a model states each example's fact: the least, over the example's target tokens
from its start through the end of its fact (teacher-forced), of log p(that token) minus the best
other token's log p.

On a model's own greedy reply every token is its first choice, so the margin is how near the
decode came to leaving the path that reaches the fact: a near tie anywhere on it (SmolLM2: "The
Berlin Wall was built by|in ...", then "in 1990") is an answer any small update may flip. A
negative margin means some token is not the model's first choice. ``trainer`` uses it, where a
registry row asks (``SweepConfig.retain_probe_margin``), to keep near ties out of the gate's
retain probe; the bench reports it. It trains nothing and does not decide what a floor should be.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from unlearn_engine.data.records import Example
from unlearn_engine.encoding import IGNORE, collate


@torch.no_grad()
def fact_margins(model: torch.nn.Module, tokenizer, examples: Sequence[Example],
                 batch_size: int = 16) -> list[float]:
    """One margin per example, over its whole target where its fact is not found in it."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[float] = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        b = collate(tokenizer, chunk, device=device)
        fact = collate(tokenizer, chunk, device=device, fact_only=True).labels[:, 1:]
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1)  # [B, L-1, V]
        labels = b.labels[:, 1:]
        for row_lp, row_lab, row_fact in zip(lp, labels, fact):
            pos = (row_lab != IGNORE).nonzero().flatten()
            in_fact = (row_fact != IGNORE).nonzero().flatten()
            if len(in_fact) and len(in_fact) < len(pos):  # through the fact's last token
                pos = pos[pos <= in_fact.max()]
            if not len(pos):
                out.append(math.nan)
                continue
            tok_lp = row_lp[pos]  # [n, V]
            true = tok_lp.gather(1, row_lab[pos].unsqueeze(1)).squeeze(1)
            other = tok_lp.scatter(1, row_lab[pos].unsqueeze(1), -math.inf).max(-1).values
            out.append(float((true - other).min()))
    model.train(was_training)
    return out

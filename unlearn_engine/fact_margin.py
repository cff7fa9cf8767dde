"""How firmly a model states each example's fact: the least, over the fact's tokens in the
example's target (teacher-forced), of log p(that token) minus the best other token's log p.

A negative margin means some fact token is not the model's first choice; a margin near zero is
a near tie that any small update may flip. ``trainer`` uses it, where a registry row asks
(``SweepConfig.retain_probe_margin``), to keep near ties out of the gate's retain probe; the
bench reports it. It trains nothing and does not decide what a floor should be.
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
    """One margin per example (nan where the example has no fact span in its target)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[float] = []
    for i in range(0, len(examples), batch_size):
        b = collate(tokenizer, examples[i:i + batch_size], fact_only=True, device=device)
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1)  # [B, L-1, V]
        labels = b.labels[:, 1:]
        for row_lp, row_lab in zip(lp, labels):
            pos = (row_lab != IGNORE).nonzero().flatten()
            if not len(pos):
                out.append(math.nan)
                continue
            tok_lp = row_lp[pos]  # [n, V]
            true = tok_lp.gather(1, row_lab[pos].unsqueeze(1)).squeeze(1)
            other = tok_lp.scatter(1, row_lab[pos].unsqueeze(1), -math.inf).max(-1).values
            out.append(float((true - other).min()))
    model.train(was_training)
    return out

"""Relearning attack: fine-tune on half of the forgotten facts, measure the other half.

Benign relearning restored 88 % of unlearned knowledge in arXiv 2410.08827: if the facts were
only suppressed, a few steps on some of them unlock the rest. The forgotten QA is split by fact
(every phrasing of a fact lands in the same half, so the measured half was never relearned),
a fresh LoRA is trained on one half with plain NLL for ``relearn_steps`` steps, and fact-span
accuracy is measured on the other half. The budget is in ``AttackSettings``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from peft import LoraConfig, get_peft_model

from unlearn_engine.data.records import Example
from unlearn_engine.encoding import collate
from unlearn_engine.evaluation.attacks.base import (Attack, AttackSets, AttackSettings,
                                                    fact_accuracy, merged_copy, register_attack)


def split_by_fact(examples: tuple[Example, ...]) -> tuple[list[Example], list[Example]]:
    """(train half, measured half): facts alternate between halves in first-seen order."""
    facts = list(dict.fromkeys(e.fact_text for e in examples))
    train_facts = set(facts[::2])
    train = [e for e in examples if e.fact_text in train_facts]
    measured = [e for e in examples if e.fact_text not in train_facts]
    return train, measured


def relearned_copy(model: torch.nn.Module, tokenizer, train: Sequence[Example],
                   settings: AttackSettings,
                   target_modules: str | list[str] = "all-linear",
                   fact_only: bool = False) -> torch.nn.Module:
    """A merged copy of ``model`` with a fresh LoRA (on ``target_modules``) trained with plain
    NLL on ``train`` for ``settings.relearn_steps`` seeded steps; returned in eval mode.
    ``fact_only``: the loss only on each answer's fact span (a probe, not the attack)."""
    s = settings
    clone = merged_copy(model)
    device = next(clone.parameters()).device
    torch.manual_seed(s.seed)
    peft = get_peft_model(clone, LoraConfig(r=s.relearn_rank, lora_alpha=2 * s.relearn_rank,
                                            target_modules=target_modules, lora_dropout=0.0))
    params = [p for p in peft.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.relearn_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(s.seed)
    peft.train()
    for _ in range(s.relearn_steps):
        idx = torch.randint(len(train), (min(s.relearn_batch, len(train)),), generator=gen)
        batch = collate(tokenizer, [train[i] for i in idx.tolist()], device=device,
                        fact_only=fact_only)
        loss = peft(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    labels=batch.labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    peft.eval()
    return peft


@register_attack("relearn")
class Relearn(Attack):
    def run(self, model, tokenizer, sets: AttackSets) -> dict[str, float]:
        qa = tuple(e for e in sets.forget if e.is_qa)
        train, measured = split_by_fact(qa)
        if not train or not measured:
            return {}
        peft = relearned_copy(model, tokenizer, train, self.settings)
        scores = fact_accuracy(peft, tokenizer, measured)
        return {"attack.relearn.forget_accuracy": scores.get("forget.fact_span_accuracy",
                                                             float("nan")),
                "attack.relearn.n_measured": float(len(measured))}

"""Quantization attack: round-to-nearest weight quantization of base + merged stack.

4-bit quantization restored 21 % -> 83 % of forgotten knowledge in Zhang et al. (ICLR 2025):
a LoRA delta small next to the quantization step is rounded away, and the base weights, which
still hold the facts, come back. int8 (per output channel) rarely does; int4 (groups of
``quant_group`` inputs) is where published attacks recover knowledge. Weights are quantized and
dequantized in place on a merged copy, so any device and dtype evaluates it.

Plain symmetric RTN in torch rather than torchao's affine primitives (tried first: they give the
same kind of rounding, 0.00 recovered on the demo adapter either way), because once torchao is
installed transformers and peft import it in every process that loads a model: seconds of import
time and warnings about its GPU-only kernels on every server start, for six lines of arithmetic.
"""

from __future__ import annotations

import torch

from unlearn_engine.evaluation.attacks.base import (Attack, AttackSets, fact_accuracy,
                                                    merged_copy, register_attack)


@torch.no_grad()
def round_to_nearest(weight: torch.Tensor, bits: int, group: int | None) -> torch.Tensor:
    """Symmetric RTN of a [out, in] weight: one scale per output channel, or per ``group``
    inputs; returns the dequantized weight (what a quantized model computes with)."""
    qmax = 2 ** (bits - 1) - 1
    out, cols = weight.shape
    g = group if group and cols % group == 0 else cols
    w = weight.float().reshape(out, cols // g, g)
    scale = (w.abs().amax(-1, keepdim=True) / qmax).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.clamp(torch.round(w / scale), -qmax - 1, qmax)
    return (q * scale).reshape(out, cols).to(weight.dtype)


def quantized_copy(model: torch.nn.Module, bits: int, group: int | None) -> torch.nn.Module:
    clone = merged_copy(model)
    for module in clone.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.data = round_to_nearest(module.weight.data, bits, group)
    return clone


class _Quantize(Attack):
    bits = 8

    def run(self, model, tokenizer, sets: AttackSets) -> dict[str, float]:
        group = None if self.bits == 8 else self.settings.quant_group
        q = quantized_copy(model, self.bits, group)
        scores = fact_accuracy(q, tokenizer, sets.forget, sets.paraphrase)
        return {f"attack.{self.name}.{k.replace('.fact_span', '')}": v
                for k, v in scores.items() if k.endswith("fact_span_accuracy")}


@register_attack("quant8")
class Quantize8(_Quantize):
    bits = 8


@register_attack("quant4")
class Quantize4(_Quantize):
    bits = 4

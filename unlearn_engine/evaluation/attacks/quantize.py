"""Quantization attack: round-to-nearest weight quantization of base + merged stack.

4-bit quantization restored 21 % -> 83 % of forgotten knowledge in Zhang et al. (ICLR 2025):
a LoRA delta small next to the quantization step is rounded away, and the base weights, which
still hold the facts, come back. int8 (per output channel) rarely does; int4 (groups of
``quant_group`` inputs) is where published attacks recover knowledge. Uses torchao's affine
quantization primitives (the maintained successor of ``torch.ao.quantization``); weights are
quantized and dequantized in place on a merged copy, so any device and dtype evaluates it.
"""

from __future__ import annotations

import torch
from torchao.quantization.quant_primitives import (MappingType, choose_qparams_affine,
                                                   dequantize_affine, quantize_affine)

from unlearn_engine.evaluation.attacks.base import (Attack, AttackSets, fact_accuracy,
                                                    merged_copy, register_attack)


@torch.no_grad()
def round_to_nearest(weight: torch.Tensor, bits: int, group: int | None) -> torch.Tensor:
    """Symmetric RTN of a [out, in] weight: per output channel, or per ``group`` inputs."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    cols = weight.shape[1]
    block = (1, group if group and cols % group == 0 else cols)
    w = weight.float()
    scale, zero = choose_qparams_affine(w, MappingType.SYMMETRIC, block, torch.int8, qmin, qmax)
    q = quantize_affine(w, block, scale, zero, torch.int8, qmin, qmax)
    return dequantize_affine(q, block, scale, zero, torch.int8, qmin, qmax).to(weight.dtype)


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
    cheap = True


@register_attack("quant4")
class Quantize4(_Quantize):
    bits = 4
    cheap = True

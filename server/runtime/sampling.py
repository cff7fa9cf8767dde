"""Next-token choice for a batch whose rows each have their own sampling parameters.

Greedy rows take the argmax. Sampled rows are filtered (temperature, top-k, top-p) and drawn in
one vectorised pass over the batch: each row draws its randomness from its own seeded
`torch.Generator` (one exponential noise vector per step), and the token is the argmax of
probability / noise, an exact draw from the filtered distribution (the exponential race). So a
seeded request gives the same tokens whatever else is batched with it. Does not apply repetition
penalties or logit processors beyond temperature/top-k/top-p.
"""

from __future__ import annotations

import torch

from server.runtime.params import SamplingParams


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    if params.greedy:
        return None
    gen = torch.Generator(device=device)
    if params.seed is None:
        gen.seed()
    else:
        gen.manual_seed(params.seed)
    return gen


def filter_logits(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """logits [B, V] float32 -> tempered logits with each row's disallowed tokens at -inf."""
    dev, vocab = logits.device, logits.shape[-1]
    ks = [p.top_k if 0 < p.top_k < vocab else 0 for p in params]
    logits = logits / torch.tensor([p.temperature for p in params], device=dev)[:, None]
    if not any(ks) and all(p.top_p >= 1.0 for p in params):  # decided on the host: no device sync
        return logits
    top_k = torch.tensor(ks, device=dev)
    top_p = torch.tensor([p.top_p for p in params], device=dev)[:, None]
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [B, V]
    # top-k: drop what is below each row's k-th value (ties with it stay); k = 0 keeps all
    kth = sorted_logits.gather(1, (top_k - 1).clamp(min=0)[:, None])
    kth = torch.where(top_k[:, None] > 0, kth, torch.full_like(kth, float("-inf")))
    sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    # top-p: drop a token when the mass before it already reaches top_p (the first always stays)
    probs = torch.softmax(sorted_logits, dim=-1)
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
    drop_sorted |= sorted_logits == float("-inf")
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """logits [B, V] -> one token id per row."""
    logits = logits.float()
    chosen = logits.argmax(dim=-1)
    sampled = [i for i, p in enumerate(params) if not p.greedy]
    if sampled:
        idx = torch.tensor(sampled, device=logits.device)
        probs = torch.softmax(filter_logits(logits[idx], [params[i] for i in sampled]), dim=-1)
        noise = torch.empty_like(probs)
        for row, i in enumerate(sampled):  # each row's own stream of randomness
            noise[row].exponential_(generator=generators[i])
        chosen[idx] = (probs / noise).argmax(dim=-1)
    return chosen.tolist()

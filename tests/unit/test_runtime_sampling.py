"""Vectorised sampling: exact draws from each row's filtered distribution, seeded per row."""

from __future__ import annotations

import collections

import torch

from server.runtime.params import SamplingParams
from server.runtime.sampling import choose_tokens, filter_logits, make_generator

CPU = torch.device("cpu")


def test_draws_follow_the_filtered_distribution_and_never_leave_it() -> None:
    logits = torch.randn(1, 12, generator=torch.Generator().manual_seed(0))
    for params in (SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_k=3),
                   SamplingParams(temperature=1.3, top_p=0.6), SamplingParams(temperature=1.0, top_k=5, top_p=0.8)):
        gen = make_generator(SamplingParams(temperature=1.0, seed=1), CPU)
        counts = collections.Counter(choose_tokens(logits, [params], [gen])[0] for _ in range(3000))
        expected = torch.softmax(filter_logits(logits, [params]), dim=-1)[0]
        assert set(counts) <= {i for i in range(12) if expected[i] > 0}, params
        for token, p in enumerate(expected.tolist()):
            assert abs(counts[token] / 3000 - p) < 0.04, (params, token)


def test_a_seeded_row_draws_the_same_tokens_whatever_its_neighbours() -> None:
    logits = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    mine = SamplingParams(temperature=1.0, top_p=0.9, top_k=20, seed=42)
    gen = make_generator(mine, CPU)
    alone = [choose_tokens(logits[:1], [mine], [gen])[0] for _ in range(20)]
    neighbours = [SamplingParams(), SamplingParams(temperature=2.0, top_k=2, seed=1), SamplingParams(temperature=0.5)]
    gens = [make_generator(mine, CPU)] + [make_generator(p, CPU) for p in neighbours]
    together = [choose_tokens(logits, [mine, *neighbours], gens)[0] for _ in range(20)]
    assert together == alone

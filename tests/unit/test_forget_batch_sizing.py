"""The forget batch follows the forget set: one person keeps the batch, several scale it."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearn_engine.data import ForgetRequest, build_forget_set, build_retain_set
from unlearn_engine.data.records import Example, ForgetSet
from unlearn_engine.evaluation import GateConfig
from unlearn_engine.methods import NpoConfig, get_method
from tests.support.toy_model import build_toy
from unlearn_engine.trainer import SweepConfig, subject_count, unlearn

torch.set_num_threads(1)


def test_counterfactual_sizes_its_batch_by_people_up_to_a_cap():
    cfg = get_method("counterfactual").config_cls()
    assert (cfg.batch_size, cfg.max_steps) == (8, 120)
    assert cfg.sized_for(0) is cfg and cfg.sized_for(1) is cfg  # one person: as today
    two, four, nine = cfg.sized_for(2), cfg.sized_for(4), cfg.sized_for(9)
    assert (two.batch_size, two.max_steps) == (16, 180)
    assert (four.batch_size, four.max_steps) == (32, 180)
    assert (nine.batch_size, nine.max_steps) == (32, 180)  # capped
    assert four.lr == cfg.lr and four.retain_batch_size == cfg.retain_batch_size


def test_sizing_is_off_by_default_and_never_shrinks_an_explicit_batch():
    npo = NpoConfig()
    assert npo.sized_for(4) is npo
    big = NpoConfig(batch_size=48, batch_per_subject=8, max_batch_size=32, multi_subject_steps=2)
    assert big.sized_for(3).batch_size == 48 and big.sized_for(3).max_steps == 2 * big.max_steps


def test_subject_count_reads_the_request_and_the_examples():
    ex = [Example(prompt="q", target="a", subject="Ann Lee"),
          Example(prompt="q", target="b", subject="ann lee"),
          Example(prompt="q", target="c", subject="Bo Ray"), Example(prompt="", target="text")]
    assert subject_count(ForgetSet(examples=tuple(ex))) == 2
    assert subject_count(ForgetSet(examples=tuple(ex), subjects=("Cy Dun",))) == 3
    assert subject_count(ForgetSet(examples=(Example(prompt="", target="text"),))) == 0


@pytest.fixture(scope="module")
def toy():
    return build_toy(n_people=4, steps=60)


@pytest.mark.parametrize("n_people", [1, 2])
def test_the_trained_config_is_sized_for_the_forget_set(toy, n_people):
    corpus = [*toy.train, *toy.paraphrase, *toy.holdout, *toy.texts]
    fs = build_forget_set(ForgetRequest(subjects=list(toy.people[:n_people])), corpus)
    rs = build_retain_set(None, toy.tokenizer, corpus, exclude=fs)
    cfg = NpoConfig(max_steps=2, eval_every=2, batch_per_subject=8, multi_subject_steps=1.5)
    _, result = unlearn(copy.deepcopy(toy.model), toy.tokenizer, fs, rs, "npo", cfg,
                        GateConfig(mia_attacks=()), sweep=SweepConfig(max_tries=1, retain_probe=8))
    assert result.config.batch_size == (8 if n_people == 1 else 16)
    assert result.attempts[0].max_steps == (2 if n_people == 1 else 3)

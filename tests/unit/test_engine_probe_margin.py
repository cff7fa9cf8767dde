"""The retain-probe margin: with a floor, the gate's retain probe holds only answers the model
states firmly, every other retain example is trained on; without one the split is unchanged."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from unlearn_engine.data import ForgetRequest, build_forget_set, build_retain_set
from unlearn_engine.fact_margin import fact_margins
from unlearn_engine.trainer import SweepConfig, _retain_split
from tests.support.toy_model import build_toy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def env():
    toy = build_toy()
    corpus = [*toy.train, *toy.paraphrase, *toy.holdout, *toy.texts]
    fs = build_forget_set(ForgetRequest(subjects=[toy.people[0]]), corpus)
    rs = build_retain_set(None, toy.tokenizer, corpus, exclude=fs)
    return toy, fs, rs


def test_margins_are_finite_and_lower_where_the_fact_is_not_the_first_choice(env):
    toy, _, rs = env
    examples = [e for e in rs.examples if e.fact][:16]
    margins = fact_margins(toy.model, toy.tokenizer, examples)
    assert len(margins) == len(examples) and all(math.isfinite(m) for m in margins)
    wrong = [replace(e, target=e.target.replace(e.fact, "Zzqx Vvb"), fact="Zzqx Vvb") for e in examples]
    worse = fact_margins(toy.model, toy.tokenizer, wrong)
    assert sum(w < m for w, m in zip(worse, margins)) > len(examples) // 2


def test_a_floor_keeps_near_ties_out_of_the_probe_and_in_training(env):
    toy, _, rs = env
    plain, plain_train = _retain_split(rs, SweepConfig(retain_probe=32))
    assert plain == rs.examples[:32]  # no floor: the first examples, as before
    margins = dict(zip(rs.examples, fact_margins(toy.model, toy.tokenizer, rs.examples)))
    floor = sorted(margins.values())[len(margins) // 2]  # half the examples fall below it
    probe, train = _retain_split(rs, SweepConfig(retain_probe=32, retain_probe_margin=floor),
                                 toy.model, toy.tokenizer)
    assert probe and all(margins[e] >= floor for e in probe)
    assert set(probe).isdisjoint(train)
    assert len(probe) + len(train) == len(rs.examples)
    assert all(e in train for e, m in margins.items() if m < floor)

"""Attacks on unlearned models: they transform a copy, measure forgotten facts, and the gate
reads their results."""

from __future__ import annotations

import pytest
import torch

from unlearn_engine.evaluation import GateConfig, gate_decision
from unlearn_engine.evaluation.attacks import ATTACKS, AttackSets, AttackSettings, run_attacks
from unlearn_engine.evaluation.attacks.quantize import round_to_nearest
from unlearn_engine.evaluation.attacks.relearn import split_by_fact
from tests.support.toy_model import build_toy

torch.set_num_threads(1)


def test_round_to_nearest_keeps_int8_close_and_gives_int4_sixteen_levels_per_group():
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    w8 = round_to_nearest(w, 8, None)
    assert (w8 - w).abs().max() <= w.abs().max(dim=1).values.max() / 127 + 1e-6
    w4 = round_to_nearest(w, 4, 32)
    for row in w4.reshape(16, 2, 32).reshape(-1, 32):  # each group: at most 16 distinct values
        assert row.unique().numel() <= 16
    assert not torch.equal(w4, w) and w4.shape == w.shape


def test_relearning_split_keeps_every_phrasing_of_a_fact_in_one_half():
    toy = build_toy()
    person = toy.people[0]
    qa = tuple(e for e in toy.train if e.subject == person)
    train, measured = split_by_fact(qa)
    assert train and measured
    assert not {e.fact_text for e in train} & {e.fact_text for e in measured}
    assert len(train) + len(measured) == len(qa)


def test_attacks_copy_the_model_and_find_what_it_still_knows():
    toy = build_toy()
    person = toy.people[0]
    sets = AttackSets(tuple(e for e in toy.train if e.subject == person),
                      tuple(e for e in toy.paraphrase if e.subject == person))
    before = {k: v.clone() for k, v in toy.model.state_dict().items()}
    out = run_attacks(toy.model, toy.tokenizer, sets, sorted(ATTACKS),
                      AttackSettings(relearn_steps=2))
    assert all(torch.equal(v, toy.model.state_dict()[k]) for k, v in before.items())
    # The toy model never unlearned anything: int8 weights still state its facts.
    assert out["attack.quant8.forget_accuracy"] >= 0.8
    assert {"attack.quant4.forget_accuracy", "attack.relearn.forget_accuracy"} <= set(out)


def test_gate_fails_an_adapter_whose_facts_come_back_under_attack():
    good = {"forget.fact_span_accuracy": 0.0, "holdout.fact_span_accuracy": 0.02,
            "retain.fact_span_accuracy": 1.0, "before.retain.fact_span_accuracy": 1.0,
            "attack.quant4.forget_accuracy": 0.05}
    assert gate_decision(good, GateConfig(mia_attacks=())).passed
    bad = gate_decision({**good, "attack.quant4.forget_accuracy": 0.6}, GateConfig(mia_attacks=()))
    assert [c.name for c in bad.checks if not c.passed] == ["attack_quant4"]


def test_cli_lists_every_registered_attack():
    import argparse

    from unlearn_engine.cli import add_engine_commands
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    add_engine_commands(sub)
    action = next(a for a in sub.choices["evaluate"]._actions if a.dest == "attacks")
    assert sorted(action.choices) == sorted(ATTACKS)

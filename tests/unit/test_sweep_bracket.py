"""The sweep retraces an attempt whose probes jumped over the gate's window: the bracket is found,
the retrace reproduces the attempt step for step and probes every step inside the bracket, and
the sweep then goes on gentler."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from unlearn_engine import trainer
from unlearn_engine.adapter_setup import TrainableAdapter, lora_config
from unlearn_engine.checkpoints import Checkpoint
from unlearn_engine.data import ForgetRequest, build_forget_set, build_retain_set
from unlearn_engine.evaluation import GateConfig, gate_decision
from unlearn_engine.methods import NpoConfig, get_method
from unlearn_engine.trainer import SweepConfig, bracket, unlearn
from unlearn_engine.training_loop import run_attempt
from tests.support.toy_model import build_toy

torch.set_num_threads(1)
GATE = GateConfig(mia_attacks=("loss",))


def _point(step: int, auc: float, attempt: int = 0, state=None) -> Checkpoint:
    """A probe whose only check is the loss MIA: > 0.65 still remembers, < 0.35 over-unlearned."""
    return Checkpoint(attempt, step, {"mia.loss_auc": auc}, gate_decision({"mia.loss_auc": auc}, GATE, {}),
                      state or {})


def test_bracket_is_the_first_jump_from_remembering_to_over_unlearned():
    pts = [_point(10, 1.0), _point(20, 0.9), _point(30, 0.1), _point(40, 0.9), _point(50, 0.05)]
    a, b = bracket(pts)
    assert (a.step, b.step) == (20, 30)


@pytest.mark.parametrize("aucs", [
    [1.0, 0.8, 0.7],  # never over-unlearned: the next attempt goes stronger, nothing to retrace
    [0.2, 0.1, 0.05],  # over-unlearned from the first probe on: no remembering side
    [0.9, 0.5, 0.1],  # passed in between: the window was probed
])
def test_no_bracket_without_a_jump_over_the_window(aucs):
    assert bracket([_point(10 * (i + 1), a) for i, a in enumerate(aucs)]) is None


def test_no_bracket_between_neighbouring_steps():
    assert bracket([_point(3, 0.9), _point(4, 0.1)]) is None  # nothing unprobed between them


@pytest.fixture(scope="module")
def toy():
    return build_toy(n_people=4, steps=60)


def _sets(toy):
    corpus = [*toy.train, *toy.paraphrase, *toy.holdout, *toy.texts]
    fs = build_forget_set(ForgetRequest(subjects=list(toy.people[:1])), corpus)
    return fs, build_retain_set(None, toy.tokenizer, corpus, exclude=fs)


def test_a_retrace_reproduces_the_attempt_and_probes_where_asked(toy):
    fs, rs = _sets(toy)
    cfg = NpoConfig(max_steps=6, eval_every=3)
    model = copy.deepcopy(toy.model)
    sweep = SweepConfig(retain_probe=8)
    probe_retain, train_retain = trainer._retain_split(rs, sweep, model, toy.tokenizer)
    probes = trainer._probe_sets(fs, probe_retain, sweep)
    adapter = TrainableAdapter(model, "forget_new", (), lora_config(cfg, None, model), 0)
    with adapter.reference():
        baseline = probes.evaluate(adapter.model, toy.tokenizer, {"mean_nll": ("forget",)})

    def attempt(**kw):
        c = kw.pop("config", cfg)
        return run_attempt(adapter, toy.tokenizer, get_method("npo")(c), c, fs.examples, train_retain,
                           probes, GATE, baseline, **kw)

    first = {p.step: p for p in attempt(attempt=0)}
    assert sorted(first) == [3, 6]
    retrace = attempt(config=replace(cfg, max_steps=5), attempt=1, replay_of=0, probe_steps={2, 3, 4})
    assert [p.step for p in retrace] == [2, 3, 4, 5]  # the asked steps, and the last one
    assert all(p.attempt == 1 for p in retrace)
    at3 = next(p for p in retrace if p.step == 3)
    for name, weight in first[3].state.items():  # step 3 again, bit for bit
        assert torch.equal(weight, at3.state[name]), name
    other = attempt(attempt=1)  # its own seeds: another data order, other weights
    assert any(not torch.equal(w, other[0].state[n]) for n, w in first[3].state.items())


def test_the_sweep_retraces_a_bracket_then_goes_gentler(toy, monkeypatch):
    """The sweep's plan, with the attempts' probes made up (the trajectory is the toy's job
    above): a jump from 0.9 to 0.1 between steps 10 and 20 is retraced at steps 11-19 with the
    same config and seeds; when that misses too, the sweep goes on gentler."""
    fs, rs = _sets(toy)
    calls = []

    def fake_attempt(adapter, tokenizer, method, config, *args, attempt, replay_of=None,
                     probe_steps=None, **kw):
        calls.append((config, attempt, replay_of, probe_steps))
        state = adapter.state()
        if replay_of is None:
            return [_point(10, 0.9, attempt, state), _point(20, 0.1, attempt, state)]
        return [_point(s, 0.8 if s < 15 else 0.2, attempt, state) for s in sorted(probe_steps)]

    monkeypatch.setattr(trainer, "run_attempt", fake_attempt)
    cfg = NpoConfig(max_steps=20, eval_every=10)
    _, result = unlearn(copy.deepcopy(toy.model), toy.tokenizer, fs, rs, "npo", cfg, GATE,
                        sweep=SweepConfig(max_tries=4, retain_probe=8))
    (c0, a0, r0, p0), (c1, a1, r1, p1), (c2, a2, r2, p2), (c3, a3, r3, p3) = calls
    assert (a0, r0, p0) == (0, None, None)
    assert (a1, r1, p1) == (1, 0, frozenset(range(11, 20)))
    assert c1 == replace(c0, max_steps=19)  # the same training, stopped before the over side
    assert (a2, r2) == (2, None) and (c2.lr, c2.max_steps) == (c0.lr * 0.5, 30)  # gentler
    assert (a3, r3) == (3, 2)  # attempt 2 jumped the window too: retraced
    assert [a.replay_of for a in result.attempts] == [None, 0, None, 2]
    assert not result.passed


def test_refine_off_keeps_the_plain_sweep(toy, monkeypatch):
    fs, rs = _sets(toy)
    calls = []

    def fake_attempt(adapter, tokenizer, method, config, *args, attempt, replay_of=None,
                     probe_steps=None, **kw):
        calls.append(replay_of)
        return [_point(10, 0.9, attempt, adapter.state()), _point(20, 0.1, attempt, adapter.state())]

    monkeypatch.setattr(trainer, "run_attempt", fake_attempt)
    unlearn(copy.deepcopy(toy.model), toy.tokenizer, fs, rs, "npo", NpoConfig(max_steps=20), GATE,
            sweep=SweepConfig(max_tries=3, retain_probe=8, refine=False))
    assert calls == [None, None, None]

"""The retain projection: off, a step's gradient is the joint loss's; on, the forget part no
longer points against the retain gradient (per the whole adapter or per LoRA tensor)."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearn_engine.adapter_setup import TrainableAdapter, lora_config
from unlearn_engine.methods import TrainContext, get_method
from unlearn_engine.methods.losses import retain_loss
from unlearn_engine.projection import backward
from tests.support.toy_model import build_toy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup():
    toy = build_toy()
    cfg = get_method("grad_diff").config_cls(lr=1e-2, retain_weight=2.0)
    adapter = TrainableAdapter(copy.deepcopy(toy.model), "new", [], lora_config(cfg, None), seed=0)
    with torch.no_grad():  # B away from zero, so A gets a gradient too
        for n, p in adapter.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    ctx = TrainContext(adapter.model, toy.tokenizer, cfg, adapter.reference, seed=0)
    forget = [e for e in toy.train if e.subject == toy.people[0]][:4]
    retain = [e for e in toy.train if e.subject == toy.people[1]][:4]
    return get_method("grad_diff")(cfg), ctx, adapter.params, forget, retain


def grads(params) -> list[torch.Tensor]:
    return [p.grad.clone() for p in params]


def retain_grads(ctx, params, retain) -> list[torch.Tensor]:
    g = torch.autograd.grad(ctx.config.retain_weight * retain_loss(ctx, retain), params)
    return list(g)


def test_off_is_the_joint_backward(setup):
    method, ctx, params, forget, retain = setup
    loss, _ = method.loss(ctx, forget, retain)
    joint = torch.autograd.grad(loss, params)
    backward(method, ctx, forget, retain, params, "")
    for a, b in zip(grads(params), joint):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("projection", ["global", "tensor"])
def test_projected_forget_part_never_opposes_the_retain_gradient(setup, projection):
    method, ctx, params, forget, retain = setup
    _, parts = backward(method, ctx, forget, retain, params, projection)
    total, g_r = grads(params), retain_grads(ctx, params, retain)
    g_f = [t - r for t, r in zip(total, g_r)]
    groups = [range(len(params))] if projection == "global" else [[i] for i in range(len(params))]
    for idx in groups:  # cosine >= 0, up to float error (g_f is recovered as total - g_r)
        dot = sum(float((g_f[i] * g_r[i]).sum()) for i in idx)
        norm_f = sum(float(g_f[i].square().sum()) for i in idx)
        norm_r = sum(float(g_r[i].square().sum()) for i in idx)
        norms = (norm_f * norm_r) ** 0.5
        assert dot >= -1e-4 * norms
    # gradient ascent on one person against descent on another: some conflict was removed
    assert parts["conflicts"] > 0
    joint_loss, _ = method.loss(ctx, forget, retain)
    joint = torch.autograd.grad(joint_loss, params)
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(total, joint))


def test_unknown_projection_names_the_valid_ones(setup):
    method, ctx, params, forget, retain = setup
    with pytest.raises(ValueError, match="valid"):
        backward(method, ctx, forget, retain, params, "pcgrad")

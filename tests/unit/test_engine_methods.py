"""Every method's first training step lowers the forget likelihood; the stack stays frozen."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from unlearn_engine.adapter_setup import TrainableAdapter, linear_module_names, lora_config
from unlearn_engine.methods import (METHODS, MethodConfig, NpoConfig, TrainContext,
                                    UnknownMethodError, get_method)
from unlearn_engine.methods.losses import sequence_logprob
from tests.support.toy_model import build_toy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy():
    return build_toy()


def forget_logprob(model, tok, examples) -> float:
    from unlearn_engine.encoding import collate
    with torch.no_grad():
        lp, _ = sequence_logprob(model, collate(tok, examples))
    return float(lp.sum())


def step_once(toy, method_name: str, steps: int = 1, lr: float = 1e-2, **overrides):
    model = copy.deepcopy(toy.model)
    method_cls = get_method(method_name)
    cfg = method_cls.config_cls(lr=lr, **overrides)
    method = method_cls(cfg)
    layers = method.lora_layers(model.config.num_hidden_layers)
    adapter = TrainableAdapter(model, "new", [], lora_config(cfg, layers, model), seed=0)
    forget = [e for e in toy.train if e.subject == toy.people[0]][:8]
    retain = [e for e in toy.train if e.subject == toy.people[1]][:8]
    ctx = TrainContext(adapter.model, toy.tokenizer, cfg, adapter.reference, seed=0)
    method.prepare(ctx, forget)
    before = forget_logprob(adapter.model, toy.tokenizer, forget)
    opt = torch.optim.AdamW(adapter.params, lr=lr, weight_decay=0.0)
    adapter.model.train()
    for _ in range(steps):
        loss, parts = method.loss(ctx, forget, retain if method.uses_retain else None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    adapter.model.eval()
    return before, forget_logprob(adapter.model, toy.tokenizer, forget), parts, adapter


def test_registry_has_every_method_and_names_valid_ones_on_error():
    assert set(METHODS) == {"grad_ascent", "grad_diff", "npo", "simnpo", "rmu", "idk",
                            "counterfactual"}
    with pytest.raises(UnknownMethodError, match=r"valid: \['counterfactual', 'grad_ascent'"):
        get_method("dpo")


def test_configs_are_frozen_and_strict():
    cfg = NpoConfig()
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # type: ignore[misc]
    assert NpoConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown NpoConfig fields"):
        NpoConfig.from_dict({"learning_rate": 1.0})
    stronger = cfg.scaled(2.0, 1.5)
    assert stronger.lr == 2 * cfg.lr and stronger.max_steps == round(1.5 * cfg.max_steps)
    with pytest.raises(TypeError):
        get_method("npo")(MethodConfig())  # NPO needs its own config (beta)


@pytest.mark.parametrize("name", ["grad_ascent", "grad_diff", "npo", "simnpo", "idk"])
def test_one_step_lowers_forget_likelihood(toy, name):
    before, after, parts, _ = step_once(toy, name)
    assert after < before - 0.05, (name, before, after, parts)
    assert all(torch.isfinite(torch.tensor(v)) for v in parts.values())


def test_idk_sft_variant_also_lowers_forget_likelihood(toy):
    from unlearn_engine.methods import IdkConfig
    model = copy.deepcopy(toy.model)
    cfg = IdkConfig(variant="sft", lr=1e-2)
    method = get_method("idk")(cfg)
    adapter = TrainableAdapter(model, "new", [], lora_config(cfg, None))
    forget = list(toy.train[:8])
    ctx = TrainContext(adapter.model, toy.tokenizer, cfg, adapter.reference)
    before = forget_logprob(adapter.model, toy.tokenizer, forget)
    opt = torch.optim.AdamW(adapter.params, lr=cfg.lr)
    loss, _ = method.loss(ctx, forget, None)
    loss.backward()
    opt.step()
    assert forget_logprob(adapter.model, toy.tokenizer, forget) < before - 0.5


def test_rmu_steps_lower_forget_likelihood_and_touch_only_early_layers(toy):
    before, after, parts, adapter = step_once(toy, "rmu", steps=3, layer=0)
    assert after < before - 0.5, (before, after, parts)
    names = [n for n, _ in adapter.model.named_parameters() if ".new." in n]
    assert names and all("layers.0." in n for n in names)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_stack_stays_frozen_and_reference_is_the_stack(toy, name):
    # Every method trains only the new adapter above an existing (random, non-zero) stack.
    torch.manual_seed(1)
    model = get_peft_model(copy.deepcopy(toy.model),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
                           adapter_name="stack0")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if ".new." not in n}
    with torch.no_grad():
        stack_only = model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits
    method_cls = get_method(name)
    cfg = method_cls.config_cls(lr=1e-2)
    method = method_cls(cfg)
    layers = method.lora_layers(model.config.num_hidden_layers)
    adapter = TrainableAdapter(model, "new", ["stack0"], lora_config(cfg, layers, model))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".new." in n for n in trainable)
    new_before = {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable}

    forget = [e for e in toy.train if e.subject == toy.people[0] and e.is_qa][:4]
    retain = [e for e in toy.train if e.subject == toy.people[1]][:4]
    ctx = TrainContext(model, toy.tokenizer, cfg, adapter.reference, references=toy.holdout)
    method.prepare(ctx, forget)
    opt = torch.optim.AdamW(adapter.params, lr=cfg.lr)
    loss, _ = method.loss(ctx, forget, retain if method.uses_retain else None)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{name}: {n} changed"
    assert any(not torch.equal(p, new_before[n]) for n, p in model.named_parameters()
               if n in new_before), f"{name}: the new adapter did not train"
    # The reference pass sees the stack alone, and switching back re-freezes the stack.
    with torch.no_grad(), adapter.reference():
        ref = model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits
    assert torch.allclose(ref, stack_only, atol=1e-6)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    with torch.no_grad():
        now = model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits
    assert not torch.allclose(now, stack_only, atol=1e-4)  # the new adapter is active again


def test_gradient_checkpointing_still_trains_lora(toy):
    # The known trap: checkpointed blocks whose inputs need no grad leave LoRA-B at zero.
    model = copy.deepcopy(toy.model)
    cfg = NpoConfig(lr=1e-2, gradient_checkpointing=True)
    adapter = TrainableAdapter(model, "new", [], lora_config(cfg, None))
    adapter.enable_gradient_checkpointing()
    adapter.model.train()
    ctx = TrainContext(adapter.model, toy.tokenizer, cfg, adapter.reference)
    loss, _ = get_method("npo")(cfg).loss(ctx, list(toy.train[:4]), list(toy.train[40:44]))
    loss.backward()
    grads = [p.grad for n, p in adapter.model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_linear_module_names_see_through_a_stack(toy):
    """A layer-restricted adapter (RMU) above a stack targets the wrapped projections, not
    LoRA's own factors or 'base_layer'."""
    plain = linear_module_names(toy.model)
    stacked = get_peft_model(copy.deepcopy(toy.model), LoraConfig(r=4, target_modules="all-linear"),
                             adapter_name="stack0")
    assert linear_module_names(stacked) == plain
    assert not {"base_layer", "stack0", "lora_A", "lora_B"} & set(plain)


def test_delta_scale_probes_and_keeps_the_scaled_adapter_and_trains_on_unscaled(toy):
    from unlearn_engine.evaluation import GateConfig
    from unlearn_engine.training_loop import PROBE_METRICS, ProbeSets, run_attempt

    forget = [e for e in toy.train if e.subject == toy.people[0]][:4]
    retain = [e for e in toy.train if e.subject == toy.people[1]][:4]
    probes = ProbeSets(forget=tuple(forget), paraphrase=(), retain=tuple(retain), holdout=())

    def attempt(scale: float):
        cfg = get_method("grad_diff").config_cls(lr=1e-2, max_steps=2, eval_every=1, patience=10,
                                                 delta_scale=scale)
        adapter = TrainableAdapter(copy.deepcopy(toy.model), "new", [], lora_config(cfg, None), seed=0)
        baseline = probes.evaluate(adapter.model, toy.tokenizer, PROBE_METRICS)
        points = run_attempt(adapter, toy.tokenizer, get_method("grad_diff")(cfg), cfg, forget, retain,
                             probes, GateConfig(), baseline)
        return points, adapter.state()

    full, live_full = attempt(1.0)
    half, live_half = attempt(0.5)
    assert [p.step for p in full] == [p.step for p in half] == [1, 2]
    for a, b in zip(full, half):
        for name, t in a.state.items():
            want = 0.5 * t if "lora_B" in name else t  # the checkpoint is the scaled adapter
            assert torch.allclose(b.state[name], want)
    assert any(t.abs().sum() > 0 for n, t in full[-1].state.items() if "lora_B" in n)
    for name, t in live_full.items():  # ... while training went on from the unscaled weights
        assert torch.equal(live_half[name], t)

"""Counterfactual rewrites (stand-in names, wrong values) and the distillation method."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from unlearn_engine.adapter_setup import TrainableAdapter, lora_config
from unlearn_engine.data.counterfactual import (NAME, VALUE, apply, counterfactuals, name_edits,
                                                stand_ins, value_swaps)
from unlearn_engine.data.records import Example
from unlearn_engine.encoding import collate
from unlearn_engine.methods import TrainContext, get_method
from unlearn_engine.methods.counterfactual import align
from tests.support.toy_model import build_toy

torch.set_num_threads(1)

EX = Example("Where was Gramfuno Dinwoun born?", "Gramfuno Dinwoun was born in Lizo.", "Lizo",
             ("Gramfuno Dinwoun was born in Kaxnendane.", "Gramfuno Dinwoun was born in Lomo."),
             subject="Gramfuno Dinwoun")


@pytest.fixture(scope="module")
def toy():
    return build_toy()


def test_rewrite_swaps_whole_names_and_maps_offsets_outside_them():
    text = "Gramfuno Dinwoun was born. Dinwoun studied; Dinwouns did not."
    rw = apply(text, name_edits(text, "Gramfuno Dinwoun", "Ab Cdefgh"))
    assert rw.text == "Ab Cdefgh was born. Cdefgh studied; Dinwouns did not."
    assert [s[4] for s in rw.spans] == [NAME, NAME]  # "Dinwouns" is another word
    at = rw.original.index(" was")
    assert rw.text[rw.new_offset(at):].startswith(" was born.")
    assert rw.new_offset(3) is None  # inside the swapped name
    assert rw.kind_at(0, 4) == NAME and rw.kind_at(at, at + 4) is None


def test_value_swaps_take_each_perturbed_answers_differing_middle():
    swaps = value_swaps(EX, rng=None)
    texts = [EX.text[:a] + rep + EX.text[b:] for a, b, rep in swaps]
    assert texts == [f"{EX.prompt} {w}" for w in EX.perturbed]
    no_wrong = Example(EX.prompt, EX.target, EX.fact, subject=EX.subject)
    import random
    (a, b, rep), = value_swaps(no_wrong, random.Random(0))
    assert EX.text[a:b] == "Lizo" and rep != "Lizo" and sorted(rep) == sorted("Lizo")


def test_stand_ins_are_never_seen_names_and_deterministic():
    refs = [Example("q", "a", subject=s) for s in ("Damdra Tornromoor", "Broumfaea Satodane",
                                                   "Solo", "Gramfuno Dinwoun")]
    names = stand_ins("Gramfuno Dinwoun", refs, k=3, seed=1)
    assert names == stand_ins("Gramfuno Dinwoun", refs, k=3, seed=1)
    assert len(names) == 3 and "Gramfuno Dinwoun" not in names and "Solo" not in names
    assert {"Damdra Tornromoor", "Broumfaea Satodane"} <= set(names)  # held-out people first
    rws = counterfactuals(EX, names, seed=1)
    assert len(rws) == 3
    for rw in rws:
        assert "Gramfuno" not in rw.text and "Dinwoun" not in rw.text and "Lizo" not in rw.text
        assert {s[4] for s in rw.spans} == {NAME, VALUE}
    assert counterfactuals(Example("q?", "an answer"), names) == []  # no subject: nothing


def _aligned(toy):
    """(rewrite, its alignment, the original's full id sequence) for one QA of a toy person."""
    tok = toy.tokenizer
    ex = next(e for e in toy.train if e.subject == toy.people[0] and e.is_qa and e.perturbed)
    rw = counterfactuals(ex, [toy.people[1]])[0]
    ids = tok(ex.text, add_special_tokens=False)["input_ids"]
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    return rw, align(tok, ex, rw), bos + ids + [tok.eos_token_id]


def test_alignment_pairs_only_identical_target_tokens(toy):
    _, a, seq = _aligned(toy)
    assert a.pairs, "the template tokens after the name must align"
    for p, q in a.pairs:
        assert seq[p + 1] == a.cf_ids[q + 1]  # the same token is predicted on both sides
    assert NAME in a.spans  # the name's tokens are collected, not paired


def test_each_value_start_pairs_positions_whose_prefixes_differ_only_in_the_name(toy):
    rw, a, seq = _aligned(toy)
    n_values = sum(1 for s in rw.spans if s[4] == VALUE)
    assert n_values >= 1 and len(a.value_starts) == n_values
    for p, q in a.value_starts:
        assert p not in {x for x, _ in a.pairs}  # the token it predicts differs between the two
        assert seq[p + 1] != a.cf_ids[q + 1]
        assert p in a.spans[VALUE][0] and q in a.spans[VALUE][1]  # the first of the value's
    assert [p for p, _ in a.value_starts] == sorted(p for p, _ in a.value_starts)


def test_each_name_start_in_the_answer_pairs_the_position_before_the_name(toy):
    rw, a, seq = _aligned(toy)
    assert a.name_starts, "the answer names the subject"
    for p, q in a.name_starts:
        assert p in a.spans[NAME][0] and q in a.spans[NAME][1]  # the first of the name's
        assert seq[p + 1] != a.cf_ids[q + 1]  # the subject's name against the stand-in's
        assert p - 1 not in a.spans[NAME][0]
    assert not set(a.name_starts) & set(a.value_starts)


def test_a_chat_model_is_aligned_on_the_sequence_it_trains_on(toy):
    # A chat model trains on the question inside its template (encoding.encode_example), not on
    # "question answer": the positions must be those of that sequence (SmolLM2 has a template).
    tok = copy.deepcopy(toy.tokenizer)
    tok.chat_template = ("{% for m in messages %}<s> user : {{ m['content'] }} </s>{% endfor %}"
                         "{% if add_generation_prompt %}<s> assistant : {% endif %}")
    ex = next(e for e in toy.train if e.subject == toy.people[0] and e.is_qa and e.perturbed)
    seq = collate(tok, [ex]).input_ids[0].tolist()
    rw = counterfactuals(ex, [toy.people[1]])[0]
    a = align(tok, ex, rw)
    assert a.pairs and a.cf_ids[0] == seq[0]  # the template's own opening, no extra BOS
    for p, q in a.pairs:
        assert seq[p + 1] == a.cf_ids[q + 1]
    orig, new = a.spans[NAME]  # the answer's name tokens on both sides
    assert orig and all(tok.decode([seq[p + 1]]) in toy.people[0].split() for p in orig)
    assert new and all(tok.decode([a.cf_ids[q + 1]]) in toy.people[1].split() for q in new)


def _method(toy, forget, references=(), anchors=()):
    """(method prepared on ``forget``, its adapter, its context) on a copy of the toy model."""
    model = copy.deepcopy(toy.model)
    method_cls = get_method("counterfactual")
    cfg = method_cls.config_cls(lr=1e-2)
    method = method_cls(cfg)
    adapter = TrainableAdapter(model, "new", [], lora_config(cfg, None, model), seed=0)
    ctx = TrainContext(adapter.model, toy.tokenizer, cfg, adapter.reference, seed=0,
                       references=references, anchors=anchors)
    method.prepare(ctx, forget)
    return method, adapter, ctx


def test_one_step_moves_forget_answers_toward_the_stand_in_prediction(toy):
    forget = [e for e in toy.train if e.subject == toy.people[0] and e.is_qa][:8]
    retain = [e for e in toy.train if e.subject == toy.people[1]][:8]
    method, adapter, ctx = _method(toy, forget, toy.holdout)
    assert len(method.targets) == len(forget)  # every example names its subject
    # the distillation alone: with the default SAM on the truth term (rho 1, a large move on
    # this toy model's weights) the KL rose over these three steps at lr 1e-2
    method.config = dataclasses.replace(method.config, sam_rho=0.0)
    opt = torch.optim.AdamW(adapter.params, lr=ctx.config.lr)
    losses = []
    adapter.model.train()
    for _ in range(3):
        loss, parts = method.loss(ctx, forget, retain)
        losses.append(parts["kl"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0], losses
    assert all(torch.isfinite(torch.tensor(v)) for v in parts.values())


def test_name_kl_adds_the_answers_name_start_to_the_fitted_positions(toy):
    forget = [e for e in toy.train if e.subject == toy.people[0] and e.is_qa][:4]
    assert all(toy.people[0] in e.target for e in forget)
    method, adapter, ctx = _method(toy, forget, toy.holdout)
    assert not method.config.name_kl  # opt-in
    plain = {k: set(t.positions.tolist()) for k, t in method.targets.items()}
    method.config = dataclasses.replace(method.config, name_kl=True)
    method.prepare(ctx, forget)
    for key, t in method.targets.items():
        added = set(t.positions.tolist()) - plain[key]
        assert plain[key] <= set(t.positions.tolist()) and len(added) >= 1, key


def test_examples_without_a_subject_fall_back_to_npo(toy):
    forget = [Example(e.prompt, e.target, e.fact) for e in toy.train[:4]]  # subjects dropped
    method, _, ctx = _method(toy, forget)
    assert method.targets == {}
    _, parts = method.loss(ctx, forget, None)
    assert "npo" in parts and "kl" not in parts


def test_anchor_term_is_zero_at_the_reference_and_pulls_drifted_strangers_back(toy):
    """Anchors hold never-seen people's answer tokens at the reference's log p: nothing to do
    before training; once the adapter has moved, the term is positive and a step on it alone
    lowers it."""
    forget = [e for e in toy.train if e.subject == toy.people[0] and e.is_qa][:4]
    method, adapter, ctx = _method(toy, forget, toy.holdout[:2], anchors=toy.holdout)
    assert len(method.anchors) == len(toy.holdout)
    assert float(method._anchor_term(ctx)) < 1e-6
    with torch.no_grad():
        for p in adapter.params:
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    opt = torch.optim.AdamW(adapter.params, lr=1e-2)
    method.anchor_gen.manual_seed(0)
    before = method._anchor_term(ctx)
    assert float(before) > 1e-4
    opt.zero_grad()
    before.backward()
    opt.step()
    method.anchor_gen.manual_seed(0)
    assert float(method._anchor_term(ctx)) < float(before)
    _, parts = method.loss(ctx, forget, None)
    assert "anchor" in parts


def test_token_scope_is_checked():
    with pytest.raises(ValueError, match="token_scope"):
        get_method("counterfactual").config_cls(token_scope="after-name")


def test_truth_gap_trains_the_tail_after_the_value_and_lifts_the_wrong_answers(toy):
    """The shared tokens after the differing value follow different values, so the truth term
    reaches them (``tail_live``); with ``lift_wrong`` the wrong answers carry gradient too.
    The shared prefix never gets any."""
    from unlearn_engine.methods.losses import truth_gap
    base = next(e for e in toy.train if e.subject == toy.people[0] and e.is_qa and e.perturbed)
    tail = " " + base.target  # a long shared tail after the value
    ex = Example(base.prompt, base.target + tail, base.fact,
                 tuple(w + tail for w in base.perturbed), subject=base.subject)
    _, adapter, ctx = _method(toy, [ex])
    batch = ctx.batch([ex])
    with torch.no_grad():
        logits = adapter.model(input_ids=batch.input_ids,
                               attention_mask=batch.attention_mask).logits.float()
    scored = (batch.labels[0, 1:] != -100).nonzero().squeeze(-1)  # output positions scored
    grads = {}
    for tail_live in (False, True):
        logp = torch.log_softmax(logits, -1).requires_grad_(True)
        gap = truth_gap(ctx, [ex], logp, batch.labels, margin=50.0, tail_live=tail_live)
        gap.backward()
        grads[tail_live] = logp.grad[0, scored].abs().sum(-1) > 0
    live_span, live_tail = grads[False], grads[True]
    assert not live_tail[0] and not live_span[0]  # the shared prefix (the name) stays detached
    assert live_span.any() and live_tail.sum() > live_span.sum()
    assert live_tail[-1] and not live_span[-1]  # the answer's last token: in the tail
    logp = torch.log_softmax(logits, -1)  # no gradient on the true side at all
    for p in adapter.params:
        p.grad = None
    truth_gap(ctx, [ex], logp, batch.labels, margin=50.0, lift_wrong=True).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.params)


def test_the_multi_fact_truth_settings_switch_on_only_for_answers_that_go_on_after_the_value(toy):
    """None = auto: a one-fact answer ("... in Brelow.") shares only its full stop after the
    value and keeps the plain truth term; an answer that goes on after its value gets the
    tail and the lifted wrong answers."""
    from unlearn_engine.methods.counterfactual import shared_tail

    one = next(e for e in toy.train if e.perturbed)  # "<name> was born in <town>."-shaped
    tail = " " + toy.train[-1].target  # another sentence after the value
    many = Example(prompt=one.prompt, target=one.target + tail, subject=one.subject,
                   fact=one.fact, perturbed=tuple(w + tail for w in one.perturbed))
    tok = toy.tokenizer
    assert shared_tail(tok, [one]) < 3 <= shared_tail(tok, [many])
    assert shared_tail(tok, [Example(prompt="q", target="a")]) == 0.0
    for data, expected in (([one], False), ([many], True)):
        method, _, _ = _method(toy, data, toy.holdout)
        assert method.multi_fact is expected


def test_adapter_off_below_silences_only_the_new_adapter_in_the_first_layers(toy):
    """Inside the block the new adapter adds nothing below the layer (all layers: the output is
    the reference's), a graph built inside backpropagates after the block only into the factors
    that were on, and the adapter is whole again after."""
    from unlearn_engine.methods.robust import adapter_off_below

    forget = [e for e in toy.train if e.subject == toy.people[0] and e.is_qa][:2]
    method, adapter, ctx = _method(toy, forget)
    with torch.no_grad():
        for p in adapter.params:
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    batch = ctx.batch(forget)
    run = lambda: adapter.model(input_ids=batch.input_ids,  # noqa: E731
                                attention_mask=batch.attention_mask).logits
    full = run()
    with adapter.reference():
        ref = run()
    n_layers = adapter.model.config.num_hidden_layers
    with adapter_off_below(adapter.model, n_layers) as n_all:
        assert torch.allclose(run(), ref, atol=1e-6)
    with adapter_off_below(adapter.model, 1) as n_first:
        part = run()
    assert 0 < n_first < n_all
    assert not torch.allclose(part, full) and not torch.allclose(part, ref)
    assert torch.allclose(run(), full)  # scaling restored
    adapter.model.zero_grad()
    part.pow(2).mean().backward()
    grads = {n: p.grad for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert all(g is None or not g.any() for n, g in grads.items() if ".layers.0." in n)
    assert any(g is not None and g.any() for n, g in grads.items() if ".layers.1." in n)


def test_deep_term_is_off_by_default_and_reported_when_on(toy):
    forget = [e for e in toy.train if e.subject == toy.people[0] and e.is_qa][:4]
    method, _, ctx = _method(toy, forget, toy.holdout)
    _, parts = method.loss(ctx, forget, None)
    assert "deep" not in parts
    method.config = get_method("counterfactual").config_cls(lr=1e-2, deep_weight=1.0,
                                                             deep_layers=2)
    loss, parts = method.loss(ctx, forget, None)
    assert "deep" in parts and parts["deep"] >= 0 and torch.isfinite(loss)
    loss.backward()


@pytest.mark.parametrize("direction,scope", [("forget", "all"), ("relearn", "all"),
                                             ("forget", "truth"), ("relearn", "truth")])
def test_sam_takes_the_gradient_at_the_moved_adapter_and_leaves_the_weights_as_they_were(
        toy, direction, scope):
    """SAM's loss has the plain term's value; its gradient is the plain one for a tiny radius
    and differs for a real one; the adapter's weights are back in place after the call."""
    from dataclasses import replace

    forget = [e for e in toy.train if e.subject == toy.people[0] and e.is_qa][:4]
    method, adapter, ctx = _method(toy, forget, toy.holdout)
    with torch.no_grad():
        for p in adapter.params:
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    before = [p.detach().clone() for p in adapter.params]
    plain_cfg = replace(method.config, sam_rho=0.0)  # without SAM

    def grad_of(cfg):
        method.config = cfg
        adapter.model.zero_grad()
        loss, parts = method.loss(ctx, forget, None)
        loss.backward()
        return float(loss), parts, torch.cat([p.grad.flatten() for p in adapter.params])

    plain_loss, plain_parts, plain = grad_of(plain_cfg)
    tiny_loss, tiny_parts, tiny = grad_of(replace(plain_cfg, sam_rho=1e-6,
                                                  sam_direction=direction, sam_scope=scope))
    big_loss, big_parts, big = grad_of(replace(plain_cfg, sam_rho=0.5, sam_direction=direction,
                                               sam_scope=scope))
    assert abs(tiny_loss - plain_loss) < 1e-4 and abs(big_loss - plain_loss) < 1e-4
    assert "sam" in big_parts and "sam" not in plain_parts
    assert torch.allclose(tiny, plain, rtol=1e-2, atol=1e-5)
    assert not torch.allclose(big, plain, rtol=1e-2, atol=1e-5)
    assert all(torch.equal(a, p) for a, p in zip(before, adapter.params))


def test_sam_is_off_by_default_and_rho_alone_turns_on_the_measured_setting():
    cfg = get_method("counterfactual").config_cls()
    assert cfg.sam_rho == 0.0
    on = get_method("counterfactual").config_cls(sam_rho=1.0)
    assert (on.sam_direction, on.sam_scope) == ("relearn", "truth")


def test_sam_direction_and_scope_are_checked():
    with pytest.raises(ValueError, match="sam_direction"):
        get_method("counterfactual").config_cls(sam_direction="up")
    with pytest.raises(ValueError, match="sam_scope"):
        get_method("counterfactual").config_cls(sam_scope="values")


def test_a_moved_forward_has_the_gradient_of_weights_really_moved_there(toy):
    """SAM's moved point without touching the weights: the loss and its gradient w.r.t. the
    adapter equal those at the adapter moved in place by rho along the direction, and graphs
    built before it can still be backpropagated (one backward for plain and moved terms)."""
    from unlearn_engine.methods.losses import nll
    from unlearn_engine.methods.robust import moved_forward

    forget = [e for e in toy.train if e.subject == toy.people[0] and e.is_qa][:4]
    _, adapter, ctx = _method(toy, forget, toy.holdout)
    named = {n: p for n, p in adapter.model.named_parameters() if p.requires_grad}
    params = list(named.values())
    with torch.no_grad():
        for p in params:
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    batch = ctx.batch(forget)
    plain = nll(adapter.model, batch)  # built before the move
    direction = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
                 for i, p in enumerate(params)]
    norm = float(torch.sqrt(sum((d ** 2).sum() for d in direction)))

    moved = nll(moved_forward(adapter.model, named, direction, 0.5), batch)
    got = torch.autograd.grad(plain + moved, params)

    before = [p.detach().clone() for p in params]
    with torch.no_grad():  # the reference: really move the weights, then put them back
        for p, d in zip(params, direction):
            p.add_(d, alpha=0.5 / norm)
    there = nll(adapter.model, batch)
    want_moved = torch.autograd.grad(there, params)
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
    want_plain = torch.autograd.grad(nll(adapter.model, batch), params)
    assert abs(float(moved) - float(there)) < 1e-5 and abs(float(moved) - float(plain)) > 1e-4
    for g, a, b in zip(got, want_plain, want_moved):
        assert torch.allclose(g, a + b, rtol=1e-4, atol=1e-6)
    assert moved_forward(adapter.model, named, [torch.zeros_like(p) for p in params], 0.5) is None


def test_sam_every_k_takes_sams_gradient_on_every_kth_step_only(toy):
    forget = [e for e in toy.train if e.subject == toy.people[0] and e.is_qa][:4]
    method, _, ctx = _method(toy, forget, toy.holdout)
    method.config = dataclasses.replace(method.config, sam_rho=0.5, sam_every=3)
    seen = []
    for _ in range(7):
        loss, parts = method.loss(ctx, forget, None)
        loss.backward()
        seen.append("sam" in parts)
    assert seen == [True, False, False, True, False, False, True]
    method.prepare(ctx, forget)  # a new attempt starts the count again
    assert "sam" in method.loss(ctx, forget, None)[1]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_sam_every_is_checked(bad):
    with pytest.raises(ValueError, match="sam_every"):
        get_method("counterfactual").config_cls(sam_every=bad)
    with pytest.raises(ValueError, match="sam_rho"):
        get_method("counterfactual").config_cls(sam_rho=-0.1)

"""The engine on CUDA: bf16 training, artifacts and stacks. Skipped where there is no GPU
(CI has none); run on a GPU machine to check the code never assumes "cpu"."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearn_engine.adapter_setup import TrainableAdapter, lora_config
from unlearn_engine.artifacts import load_artifact, model_fingerprint
from unlearn_engine.data import ForgetRequest, build_forget_set, build_retain_set
from unlearn_engine.encoding import collate
from unlearn_engine.evaluation import GateConfig, evaluate
from unlearn_engine.methods import METHODS, TrainContext, get_method
from unlearn_engine.methods.losses import sequence_logprob
from unlearn_engine.stacking import add_combined_adapter, activate, attach_stack
from tests.support.toy_model import build_toy, save_toy
from unlearn_engine.trainer import SweepConfig, load_base, train_forget_adapter

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def logprob(model, tok, examples) -> float:
    with torch.no_grad():
        lp, _ = sequence_logprob(model, collate(tok, examples, device=torch.device("cuda")))
    return float(lp.sum())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_steps_on_cuda_in_bf16(name):
    toy = build_toy()
    model = copy.deepcopy(toy.model).to("cuda", torch.bfloat16)
    cls = get_method(name)
    cfg = cls.config_cls(lr=1e-2, **({"layer": 0} if name == "rmu" else {}))
    method = cls(cfg)
    adapter = TrainableAdapter(model, "new", [], lora_config(
        cfg, method.lora_layers(model.config.num_hidden_layers), model))
    assert all(p.is_cuda for p in adapter.params)
    forget = [e for e in toy.train if e.subject == toy.people[0]][:8]
    retain = [e for e in toy.train if e.subject == toy.people[1]][:8]
    ctx = TrainContext(adapter.model, toy.tokenizer, cfg, adapter.reference)
    method.prepare(ctx, forget)
    before = logprob(adapter.model, toy.tokenizer, forget)
    opt = torch.optim.AdamW(adapter.params, lr=cfg.lr)
    for _ in range(3):
        loss, parts = method.loss(ctx, forget, retain if method.uses_retain else None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)
    assert logprob(adapter.model, toy.tokenizer, forget) < before, parts


def test_train_save_load_and_stack_on_cuda(tmp_path):
    toy = build_toy()
    save_toy(toy, tmp_path / "base")
    corpus = [*toy.train, *toy.paraphrase, *toy.holdout, *toy.texts]
    fs = build_forget_set(ForgetRequest(subjects=[toy.people[0]]), corpus)
    rs = build_retain_set(None, None, corpus, exclude=fs)
    gate = GateConfig(mia_attacks=(), max_preference_gap=1.0, max_verbatim_gap=1.0,
                      max_paraphrase_accuracy_gap=1.0, min_retain_ratio=0.7)
    cfg = get_method("npo").config_cls(lr=5e-3, max_steps=30, eval_every=10)
    result = train_forget_adapter(tmp_path / "base", [], fs, rs, "npo", cfg, gate,
                                  out_dir=tmp_path / "a1", forget_id="a1",
                                  sweep=SweepConfig(max_tries=1), device="cuda")
    assert result.passed, result.gate.reasons
    assert result.metrics["forget.fact_span_accuracy"] <= 0.2
    fp = model_fingerprint(tmp_path / "base")
    art = load_artifact(result.artifact_path, fp)
    base, tok = load_base(tmp_path / "base", "cuda")
    assert base.dtype == torch.bfloat16
    model = attach_stack(base, [art])
    m = evaluate(model, tok, fs.qa, [], metrics=["fact_span_accuracy"])
    assert m["forget.fact_span_accuracy"] == result.metrics["forget.fact_span_accuracy"]
    add_combined_adapter(model, [art.adapter_name], "v1")
    ids = torch.tensor([[1, 5, 6, 7]], device="cuda")
    with torch.no_grad():
        stacked = model(input_ids=ids).logits.float()
        activate(model, ["v1"])
        combined = model(input_ids=ids).logits.float()
    assert torch.allclose(stacked, combined, atol=5e-2, rtol=5e-2)  # bf16

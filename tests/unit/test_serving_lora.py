"""Serving-side LoRA (server/adapters/lora.py) against PEFT on the real demo model.

The server never runs PEFT: it folds a stack version into new weight tensors, serves the version
most rows run and recomputes the other rows with their own version's weights. Its outputs must
match PEFT's own stacking of the same artifacts, per row in a mixed batch, and removing every
version must give back the plain model bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from server.adapters.lora import FoldedStacks, UnsupportedAdapter, adapter_deltas, concat_deltas
from unlearn_engine.artifacts import load_artifact, model_fingerprint, save_artifact
from unlearn_engine.stacking import attach_stack
from unlearn_engine.trainer import load_base

SPECS = [(4, "all-linear", False), (2, ["q_proj", "v_proj"], True), (3, ["down_proj", "o_proj"], False)]


@pytest.fixture(scope="module")
def artifacts(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lora")
    fp = model_fingerprint(demo_model_dir)
    arts = []
    for i, (rank, targets, rslora) in enumerate(SPECS):  # different ranks, targets and scalings
        torch.manual_seed(100 + i)
        model, _ = load_base(demo_model_dir, "cpu")
        name = f"forget_s{i}"
        peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=3 * rank, target_modules=targets,
                                                use_rslora=rslora, init_lora_weights=False), adapter_name=name)
        with torch.no_grad():
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.mul_(5)  # deltas large enough that a wrong sum shows
        arts.append(save_artifact(peft, name, root / name, forget_id=f"s{i}", method="npo", config={},
                                  base_fingerprint=fp))
    return [load_artifact(a.path, fp) for a in arts]


IDS = [[5, 17, 42, 7, 99, 3], [8, 8, 120, 64, 2, 11], [33, 1, 4, 77, 12, 90]]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


def _logits(model):
    ids = torch.tensor(IDS, device=model.device)
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("device", DEVICES)
def test_installed_stack_matches_peft_per_row_and_removal_is_exact(demo_model_dir, artifacts, device) -> None:
    base_model, _ = load_base(demo_model_dir, device)
    dev, dtype = base_model.device, base_model.dtype
    plain = _logits(base_model)
    lora = FoldedStacks(base_model)
    deltas = [adapter_deltas(a) for a in artifacts]
    for d in deltas:
        lora.check(d)
    lora.install(1, lora.fold(concat_deltas(deltas)))  # the whole stack
    lora.install(2, lora.fold(concat_deltas(deltas[:1])))  # the first adapter only

    with lora.router.rows([1, None, 2], dev):
        mixed = _logits(base_model)
    with lora.router.rows([1, 1, 1], dev):
        whole = _logits(base_model)
    expect_all = _logits(attach_stack(load_base(demo_model_dir, device)[0], artifacts))
    expect_first = _logits(attach_stack(load_base(demo_model_dir, device)[0], artifacts[:1]))

    effect = (expect_all - plain).abs().max().item()
    diffs = {"whole": (whole - expect_all).abs().max().item(), "row0": (mixed[0] - expect_all[0]).abs().max().item(),
             "row1_vs_plain": (mixed[1] - plain[1]).abs().max().item(),
             "row2": (mixed[2] - expect_first[2]).abs().max().item(), "effect": effect}
    assert effect > 0.5, diffs  # the adapters really change the model
    # fp32: equal up to summation order. bf16 (CUDA): both sides round differently (PEFT scales
    # after each adapter, we fold the scaling into B and fold one concatenated product); an H200
    # run measured 0.31 max on an effect of 12.2, so allow 5 % of the effect there.
    bound = 1e-4 if dtype == torch.float32 else 0.05 * effect
    for key in ("whole", "row0", "row2"):
        assert diffs[key] <= bound, diffs
    assert torch.equal(mixed[1], plain[1]), diffs  # a base row in a mixed batch is untouched
    assert lora.served == 1 and not any(m._forward_hooks for m in base_model.modules())  # steady state
    assert torch.equal(_logits(base_model), whole)  # no hook: the served version is in the weights
    with lora.router.rows([2, 1, 2], dev):  # version 2 served, the version-1 row recomputed
        flipped = _logits(base_model)
    # a row runs its own version's weights whichever version is served (equal up to the matmul's
    # rounding for a different number of rows, as any batch is)
    assert (flipped[1] - whole[1]).abs().max().item() <= bound and (mixed[0] - whole[0]).abs().max().item() <= bound

    lora.remove(1)
    assert lora.versions == {2}
    lora.remove(2)
    assert lora.versions == set()
    assert not any(m._forward_hooks for m in base_model.modules())  # hooks gone with the last version
    assert torch.equal(_logits(base_model), plain)  # the base tensors are back in the layers
    with lora.router.rows([1, 2, None], dev):
        assert torch.equal(_logits(base_model), plain)


def test_unsupported_or_mismatched_adapters_are_refused(demo_model_dir, artifacts, tmp_path) -> None:
    lora = FoldedStacks(load_base(demo_model_dir, "cpu")[0])
    deltas = adapter_deltas(artifacts[0])
    path = next(iter(deltas))
    a, b = deltas[path]
    with pytest.raises(UnsupportedAdapter, match="not match"):
        lora.check({path: (a[:, :-1], b)})
    with pytest.raises(UnsupportedAdapter, match="not a Linear"):
        lora.check({"model.embed_tokens": (a, b)})
    cfg_path = artifacts[0].path / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    copy = tmp_path / "dora"
    copy.mkdir()
    (copy / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    (copy / "adapter_model.safetensors").write_bytes((artifacts[0].path / "adapter_model.safetensors").read_bytes())

    class _Art:  # adapter_deltas reads only the path
        path = copy

    with pytest.raises(UnsupportedAdapter, match="use_dora"):
        adapter_deltas(_Art())  # type: ignore[arg-type]

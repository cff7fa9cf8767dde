"""A stack equals the sum of its adapters' deltas, in every form the server uses."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from unlearn_engine.artifacts import load_artifact, model_fingerprint, save_artifact
from unlearn_engine.trainer import fold_stack
from unlearn_engine.stacking import (activate, add_combined_adapter, attach_stack, compact,
                                     remove_adapter)
from tests.support.toy_model import build_toy, save_toy

torch.set_num_threads(1)
IDS = torch.tensor([[1, 5, 6, 7, 8, 9], [1, 9, 8, 7, 6, 5]])


@pytest.fixture(scope="module")
def toy():
    return build_toy()


@pytest.fixture(scope="module")
def artifacts(toy, tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    save_toy(toy, root / "base")
    fp = model_fingerprint(root / "base")
    arts = []
    # Different ranks and targets: the combination must handle both.
    for i, (rank, targets) in enumerate([(4, "all-linear"), (2, ["q_proj", "v_proj"]),
                                         (3, ["down_proj", "o_proj"])]):
        torch.manual_seed(10 + i)
        name = f"forget_a{i}"
        m = get_peft_model(copy.deepcopy(toy.model),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                                      init_lora_weights=False), adapter_name=name)
        with torch.no_grad():  # make the deltas large enough that a wrong sum shows
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.mul_(20)
        arts.append(save_artifact(m, name, root / f"a{i}", forget_id=f"a{i}", method="npo",
                                  config={}, base_fingerprint=fp))
    return [load_artifact(a.path, fp) for a in arts]


def logits(model, **kw):
    with torch.no_grad():
        return model(input_ids=IDS, **kw).logits


@pytest.fixture(scope="module")
def expected(toy, artifacts):
    """Base weights + every delta, merged one adapter at a time (the definition of a stack)."""
    model = copy.deepcopy(toy.model)
    for art in artifacts:
        model = PeftModel.from_pretrained(model, str(art.path)).merge_and_unload()
    return logits(model)


def test_active_stack_equals_sum_of_deltas(toy, artifacts, expected):
    stacked = attach_stack(copy.deepcopy(toy.model), artifacts)
    assert torch.allclose(logits(stacked), expected, atol=1e-4)
    assert not any(p.requires_grad for p in stacked.parameters())
    assert not torch.allclose(logits(toy.model), expected, atol=1e-2)  # the deltas matter


def test_combined_adapter_per_version_and_per_row_routing(toy, artifacts, expected):
    model = attach_stack(copy.deepcopy(toy.model), artifacts)
    names = [a.adapter_name for a in artifacts]
    add_combined_adapter(model, names[:2], "stack_v2")
    add_combined_adapter(model, names, "stack_v3")
    activate(model, ["stack_v3"])
    assert torch.allclose(logits(model), expected, atol=1e-4)
    # An old request finishes on v2 while a new one uses v3, in the same batch.
    activate(model, names[:2])
    v2 = logits(model)
    mixed = logits(model, adapter_names=["stack_v2", "stack_v3"])
    assert torch.allclose(mixed[0], v2[0], atol=1e-4)
    assert torch.allclose(mixed[1], expected[1], atol=1e-4)
    remove_adapter(model, "stack_v2")
    assert "stack_v2" not in model.peft_config
    with pytest.raises(KeyError):
        activate(model, ["stack_v2"])


def test_compaction_is_exact_with_cat_and_with_full_rank_svd(toy, artifacts, expected):
    model = attach_stack(copy.deepcopy(toy.model), artifacts)
    names = [a.adapter_name for a in artifacts]
    exact = compact(model, names, name="compact_cat")
    assert model.active_adapters == [exact]
    assert torch.allclose(logits(model), expected, atol=1e-4)
    compact(model, names, svd_rank=4 + 2 + 3, name="compact_svd_full")  # the summed rank
    assert torch.allclose(logits(model), expected, atol=1e-3)
    compact(model, names, svd_rank=1, name="compact_svd_1", delete_sources=True)
    low = logits(model)
    assert torch.isfinite(low).all() and not torch.allclose(low, expected, atol=1e-3)
    assert not any(n in model.peft_config for n in names)


def test_folded_stack_is_a_plain_model_that_serves_the_stack(toy, artifacts, expected):
    """What a forget job trains on: the stack folded into the weights, so the job runs one LoRA
    (its own) at any stack depth, and its reference policy is the stack as served."""
    folded = fold_stack(copy.deepcopy(toy.model), artifacts)
    assert not isinstance(folded, PeftModel)
    assert not any("lora_" in n for n, _ in folded.named_parameters())
    assert torch.allclose(logits(folded), expected, atol=1e-4)
    assert fold_stack(toy.model, []) is toy.model

"""Artifacts round-trip through plain PEFT, and every kind of tampering is refused."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from unlearn_engine.artifacts import (MANIFEST, ArtifactCorruptError, ArtifactExistsError,
                                      ArtifactFormatError, ArtifactNotFoundError,
                                      BaseModelMismatchError, load_artifact, model_fingerprint,
                                      save_artifact)
from tests.support.toy_model import build_toy, save_toy

torch.set_num_threads(1)
IDS = torch.tensor([[1, 5, 6, 7, 8]])


@pytest.fixture(scope="module")
def toy():
    return build_toy()


@pytest.fixture()
def saved(toy, tmp_path):
    base_dir = tmp_path / "base"
    save_toy(toy, base_dir)
    torch.manual_seed(3)
    peft_model = get_peft_model(copy.deepcopy(toy.model),
                                LoraConfig(r=4, target_modules="all-linear",
                                           init_lora_weights=False), adapter_name="forget_f1")
    fp = model_fingerprint(base_dir)
    art = save_artifact(peft_model, "forget_f1", tmp_path / "store" / "f1", forget_id="f1",
                        method="npo", config={"lr": 1e-3}, base_fingerprint=fp,
                        metrics={"forget.fact_span_accuracy": 0.0}, parents=["f0"])
    with torch.no_grad():
        logits = peft_model(input_ids=IDS).logits
    return base_dir, art, fp, logits


def test_round_trip_through_plain_peft(toy, saved):
    base_dir, art, fp, logits = saved
    loaded = load_artifact(art.path, fp)
    assert loaded.forget_id == "f1" and loaded.method == "npo" and loaded.parents == ("f0",)
    assert loaded.metrics["forget.fact_span_accuracy"] == 0.0
    assert set(loaded.files) >= {"adapter_config.json", "adapter_model.safetensors"}
    # Standard PEFT layout: any LoRA loader can read it without Lethe.
    model = PeftModel.from_pretrained(copy.deepcopy(toy.model), str(art.path))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=IDS).logits, logits, atol=1e-6)
    leftovers = [p.name for p in art.path.parent.iterdir() if p.name != "f1"]
    assert leftovers == []  # the temp directory was renamed, not copied


def test_fingerprint_changes_with_the_weights(toy, tmp_path, saved):
    base_dir, _, fp, _ = saved
    assert model_fingerprint(base_dir) == fp
    other = copy.deepcopy(toy.model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    other.save_pretrained(str(tmp_path / "other"))
    toy.tokenizer.save_pretrained(str(tmp_path / "other"))
    assert model_fingerprint(tmp_path / "other") != fp


def test_refuses_a_flipped_byte(saved):
    _, art, fp, _ = saved
    weights = art.path / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorruptError, match="checksum mismatch for adapter_model"):
        load_artifact(art.path, fp)


def test_refuses_missing_and_unlisted_files(saved):
    _, art, fp, _ = saved
    (art.path / "adapter_model.bin").write_bytes(b"not listed")
    with pytest.raises(ArtifactCorruptError, match="not covered by the manifest"):
        load_artifact(art.path, fp)
    (art.path / "adapter_model.bin").unlink()
    (art.path / "adapter_config.json").unlink()
    with pytest.raises(ArtifactCorruptError, match="adapter_config.json .* missing"):
        load_artifact(art.path, fp)


def test_refuses_another_base_model(saved):
    _, art, _, _ = saved
    with pytest.raises(BaseModelMismatchError, match="trained on base model"):
        load_artifact(art.path, "0" * 64)


def test_refuses_bad_manifests_and_missing_dirs(saved, tmp_path):
    _, art, fp, _ = saved
    with pytest.raises(ArtifactNotFoundError):
        load_artifact(tmp_path / "nope", fp)
    manifest = art.path / MANIFEST
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(ArtifactFormatError, match="unsupported manifest format"):
        load_artifact(art.path, fp)
    manifest.write_text("{not json")
    with pytest.raises(ArtifactCorruptError, match="not valid JSON"):
        load_artifact(art.path, fp)
    manifest.unlink()
    with pytest.raises(ArtifactFormatError, match="not a Lethe artifact"):
        load_artifact(art.path, fp)


def test_artifacts_are_immutable(toy, saved):
    _, art, fp, _ = saved
    model = PeftModel.from_pretrained(copy.deepcopy(toy.model), str(art.path),
                                      adapter_name="forget_f1")
    with pytest.raises(ArtifactExistsError):
        save_artifact(model, "forget_f1", art.path, forget_id="f1", method="npo", config={},
                      base_fingerprint=fp)

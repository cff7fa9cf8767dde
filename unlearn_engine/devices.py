"""The device and dtype policy, one for the server's runtime and the engine's trainer.

CUDA + bfloat16 when a GPU is present, else CPU + float32. Does not move or load anything.
"""

from __future__ import annotations

import torch


def pick_device(requested: str | torch.device | None = "auto") -> tuple[torch.device, torch.dtype]:
    """("auto" or None: CUDA if available) -> (device, dtype to load weights in)."""
    if requested is None or requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    # bf16 halves memory and uses tensor cores on GPU; CPU bf16 matmuls are slow, so fp32 there.
    return device, (torch.bfloat16 if device.type == "cuda" else torch.float32)

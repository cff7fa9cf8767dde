"""The KV cache of a running batch, left-padded so rows of different lengths decode together.

Every row's real tokens are contiguous and right-aligned; padding columns are masked out and
positions are passed explicitly, so a row's numbers do not depend on who else is in the batch.
Rows join (merge), leave (select) and all-padding columns are dropped (trim) between steps.

Supports models whose cache is a plain `DynamicCache` of full-attention layers (Llama, Mistral
without sliding windows, GPT-style). It does not page or share memory between rows: at the sizes
this server targets, a copy on join/leave costs far less than a decode step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from unlearn_engine.encoding import left_pad


@dataclass
class KVBatch:
    cache: DynamicCache
    mask: torch.Tensor  # [B, T] 1 = real token, 0 = left padding
    positions: torch.Tensor  # [B] position id of each row's next token (= its real length)

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _left_pad(t: torch.Tensor, extra: int, dim: int) -> torch.Tensor:
    if extra == 0:
        return t
    # F.pad lists (last dim first); pad `extra` columns before the data on `dim`.
    pad = [0, 0] * (t.dim() - 1 - dim) + [extra, 0]
    return F.pad(t, pad)


def merge(a: KVBatch | None, b: KVBatch) -> KVBatch:
    """Concatenate two batches along the batch dimension, left-padding the shorter one."""
    if a is None:
        return b
    length = max(a.length, b.length)
    pa, pb = length - a.length, length - b.length
    data = [
        (torch.cat([_left_pad(ka, pa, 2), _left_pad(kb, pb, 2)]),
         torch.cat([_left_pad(va, pa, 2), _left_pad(vb, pb, 2)]))
        for (ka, va), (kb, vb) in zip(_layers(a.cache), _layers(b.cache))
    ]
    mask = torch.cat([_left_pad(a.mask, pa, 1), _left_pad(b.mask, pb, 1)])
    return KVBatch(DynamicCache(ddp_cache_data=data), mask, torch.cat([a.positions, b.positions]))


def select(batch: KVBatch, keep: list[int]) -> KVBatch | None:
    """Keep only the given rows (in that order); None when no row is left."""
    if not keep:
        return None
    if keep == list(range(batch.size)):
        return batch
    idx = torch.tensor(keep, device=batch.mask.device)
    batch.cache.batch_select_indices(idx)
    return trim(KVBatch(batch.cache, batch.mask[idx], batch.positions[idx]))


def trim(batch: KVBatch, min_columns: int = 16) -> KVBatch:
    """Drop leading columns that are padding in every row (only when worth a copy)."""
    live = batch.mask.any(dim=0).nonzero()
    first = int(live[0]) if live.numel() else batch.length
    if first < min_columns:
        return batch
    data = [(k[:, :, first:].contiguous(), v[:, :, first:].contiguous()) for k, v in _layers(batch.cache)]
    return KVBatch(DynamicCache(ddp_cache_data=data), batch.mask[:, first:].contiguous(), batch.positions)


def left_pad_prompts(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids [B, L], mask [B, L]) right-aligned with pad_id on the left."""
    ids, mask = left_pad(prompts, pad_id)
    return ids.to(device), mask.to(device)

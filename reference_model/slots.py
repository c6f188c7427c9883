"""Writing a step's keys and values into per-item cache slots (the LM's and the codec's KV caches)."""

from __future__ import annotations

import torch


def write_slots(buffer: torch.Tensor, slots: torch.Tensor, values: torch.Tensor) -> None:
    """``buffer[b, :, slots[b, t]] = values[b, :, t]`` for every item ``b`` and step ``t``, in place.

    buffer [B, H, C, ...], slots [B, T] (distinct within a row), values [B, H, T, ...]. An advanced-index
    assignment, not ``scatter_``: on CPU, ``scatter_`` into a bfloat16 tensor copies the whole buffer
    (107 ms per call on a 7B layer's 3000-slot cache at batch 4, against 0.03 ms here; float32 is not
    affected), which made every step with per-item positions three times slower on the 7B's shapes."""
    rows = torch.arange(buffer.shape[0], device=buffer.device)[:, None].expand_as(slots)
    buffer[rows, :, slots] = values.transpose(1, 2).to(buffer.dtype)

"""Per-layer key/value cache: a ring buffer bounded by the attention context.

API (what an attention layer calls, and what a subclass, e.g. a compressed int8 cache, overrides):

* ``RingKVCache(batch_size, num_kv_heads, head_dim, capacity, *, device, dtype)``
* ``append(k, v, step)``: store this step's keys/values ``[B, num_kv_heads, 1, head_dim]`` (already
  rotated by RoPE) at slot ``position % capacity`` of each item; ``step`` is a :class:`StepPositions`
  (absolute positions ``[B]`` plus host-side hints, see below).
* ``read(step) -> (keys, values, mask)``: keys/values ``[B, num_kv_heads, L, head_dim]`` over the
  ``L = step.span`` first slots (only slots that may hold data: attention never spans empty capacity),
  and ``mask`` ``[B, 1, 1, L]`` (True = attend) or ``None`` when every slot read is valid for every item.
* ``reset(mask)``: forget the items where ``mask`` [B] is True.
* ``nbytes``: bytes held (keys, values and bookkeeping): the KV-cache memory of one layer.

A slot is valid for a query at position ``p`` when it holds a position in ``(p - capacity, p]``; the
absolute position stored with every slot makes that test exact even when a caller skipped appends
(Mixture of Depths) or reset some items only. The fast path (no mask) is taken only when the streamer
knows, on the host, that all items share one position history (``step.common`` is not None).

A subclass storing compressed keys/values overrides ``_write(slot_index, k, v)`` and ``_load(span)``
(and ``nbytes``); the bookkeeping of positions and masks stays here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..slots import write_slots


@dataclass
class StepPositions:
    """Where one streaming step sits, per batch item, plus what the host knows without a device sync.

    positions: LongTensor [B], absolute position of the token being processed for each item.
    common: the position when every item is at the same one with the same history, else None.
    span: how many cache slots may hold data after this step's append (<= capacity of the cache).
    contiguous: every item's valid slots are its first min(position + 1, capacity) slots (True unless a
        transform skips appends, as Mixture of Depths does): what lets flash-attn serve a masked step
        with per-item sequence lengths instead of a mask.
    """

    positions: torch.Tensor
    common: int | None
    span: int
    cos: torch.Tensor | None = None  # RoPE angles for these positions, [B, 1, 1, D/2]
    sin: torch.Tensor | None = None
    contiguous: bool = True


class RingKVCache:
    def __init__(
        self,
        batch_size: int,
        num_kv_heads: int,
        head_dim: int,
        capacity: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.batch_size = batch_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.capacity = capacity
        # Absolute position held by each slot; -1 = empty.
        self.slot_positions = torch.full((batch_size, capacity), -1, device=device, dtype=torch.long)
        self._allocate((batch_size, num_kv_heads, capacity, head_dim), device, dtype)

    # --- storage: what a compressed subclass overrides ---------------------------------------
    def _allocate(
        self, shape: tuple[int, int, int, int], device: torch.device | str, dtype: torch.dtype
    ) -> None:
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)

    def _write(self, slots: torch.Tensor | int, k: torch.Tensor, v: torch.Tensor) -> None:
        if isinstance(slots, int):
            self.keys[:, :, slots] = k[:, :, 0]
            self.values[:, :, slots] = v[:, :, 0]
        else:
            write_slots(self.keys, slots[:, None], k)
            write_slots(self.values, slots[:, None], v)

    def _load(self, span: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[:, :, :span], self.values[:, :, :span]

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes + self.slot_positions.nbytes

    # --- bookkeeping -------------------------------------------------------------------------
    def append(self, k: torch.Tensor, v: torch.Tensor, step: StepPositions) -> None:
        if step.common is not None:
            slot = step.common % self.capacity
            self._write(slot, k, v)
            self.slot_positions[:, slot] = step.common
        else:
            slots = step.positions % self.capacity
            self._write(slots, k, v)
            self.slot_positions.scatter_(1, slots[:, None], step.positions[:, None])

    def read(self, step: StepPositions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        span = min(step.span, self.capacity)
        keys, values = self._load(span)
        if step.common is not None:
            return keys, values, None
        held = self.slot_positions[:, :span]
        query = step.positions[:, None]
        valid = (held >= 0) & (held <= query) & (held > query - self.capacity)
        return keys, values, valid[:, None, None, :]

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            self.slot_positions.fill_(-1)
        else:
            self.slot_positions.masked_fill_(mask.to(self.slot_positions.device)[:, None], -1)


# Signature of ``attention.cache_factory``: swapping it (a flag) changes the cache class of a layer.
CacheFactory = Callable[..., RingKVCache]

"""A compressed KV cache: the recent window in full precision, everything older as int8.

:class:`Int8WindowKVCache` subclasses the LM's :class:`~reference_model.lm.kv_cache.RingKVCache` and keeps
its bookkeeping (slot positions, validity masks, per-item reset); only the storage changes:

* every key/value vector is stored as int8 with one scale per (item, head, token): ``x ~= q * scale``,
  ``scale = max|x| / 127`` over the head dimension;
* the last ``window`` positions are also kept in full precision, and reading puts them back over their
  int8 copies, so attention over recent frames (where most of the mass of a streaming LM sits) is exact.

Bytes: ``capacity * (D + 1 scale)`` per head and tensor instead of ``capacity * D * 4`` (fp32), plus the
window. Reading dequantizes the spanned slots each step: it trades compute for memory.
It plugs in through the attention module's ``cache_factory`` (see :func:`int8_window_cache_factory`).
"""

from __future__ import annotations

import functools

import torch

from reference_model.lm.kv_cache import RingKVCache, StepPositions
from reference_model.slots import write_slots

DEFAULT_WINDOW = 16  # frames (1.28 s at 12.5 Hz)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (int8 codes [..., D], scale [...]) with a symmetric scale per vector."""
    scale = x.abs().amax(dim=-1).float().clamp(min=1e-12) / 127.0
    q = torch.clamp(torch.round(x.float() / scale[..., None]), -127, 127).to(torch.int8)
    return q, scale.to(x.dtype)


class Int8WindowKVCache(RingKVCache):
    def __init__(
        self,
        batch_size: int,
        num_kv_heads: int,
        head_dim: int,
        capacity: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self.window = max(1, min(window, capacity))
        self.dtype = dtype
        self._positions: torch.Tensor | int = 0
        super().__init__(batch_size, num_kv_heads, head_dim, capacity, device=device, dtype=dtype)

    def _allocate(
        self, shape: tuple[int, int, int, int], device: torch.device | str, dtype: torch.dtype
    ) -> None:
        batch_size, num_kv_heads, _, head_dim = shape
        self.keys = torch.zeros(shape, device=device, dtype=torch.int8)
        self.values = torch.zeros(shape, device=device, dtype=torch.int8)
        self.key_scales = torch.zeros(shape[:3], device=device, dtype=dtype)
        self.value_scales = torch.zeros(shape[:3], device=device, dtype=dtype)
        recent = (batch_size, num_kv_heads, self.window, head_dim)
        self.recent_keys = torch.zeros(recent, device=device, dtype=dtype)
        self.recent_values = torch.zeros(recent, device=device, dtype=dtype)
        # Which slot and position each recent entry holds (-1 = none); entry index = position % window.
        self.recent_slots = torch.full((batch_size, self.window), -1, device=device, dtype=torch.long)
        self.recent_positions = torch.full((batch_size, self.window), -1, device=device, dtype=torch.long)

    def append(self, k: torch.Tensor, v: torch.Tensor, step: StepPositions) -> None:
        self._positions = step.common if step.common is not None else step.positions
        super().append(k, v, step)

    def _write(self, slots: torch.Tensor | int, k: torch.Tensor, v: torch.Tensor) -> None:
        qk, sk = quantize_per_token(k)
        qv, sv = quantize_per_token(v)
        pos = self._positions
        if isinstance(slots, int):
            assert isinstance(pos, int)
            r = pos % self.window
            self.keys[:, :, slots], self.values[:, :, slots] = qk[:, :, 0], qv[:, :, 0]
            self.key_scales[:, :, slots], self.value_scales[:, :, slots] = sk[:, :, 0], sv[:, :, 0]
            self.recent_keys[:, :, r], self.recent_values[:, :, r] = k[:, :, 0], v[:, :, 0]
            self.recent_slots[:, r], self.recent_positions[:, r] = slots, pos
            return
        assert isinstance(pos, torch.Tensor)
        # write_slots, not scatter_: see there (scatter_ copies a whole bfloat16 buffer on CPU)
        for buffer, x in ((self.keys, qk), (self.values, qv), (self.key_scales, sk), (self.value_scales, sv)):
            write_slots(buffer, slots[:, None], x)
        r = pos % self.window
        write_slots(self.recent_keys, r[:, None], k)
        write_slots(self.recent_values, r[:, None], v)
        self.recent_slots.scatter_(1, r[:, None], slots[:, None])
        self.recent_positions.scatter_(1, r[:, None], pos[:, None])

    def _load(self, span: int) -> tuple[torch.Tensor, torch.Tensor]:
        # A recent entry is current if its slot still holds its position (not overwritten, not reset).
        held = self.slot_positions.gather(1, self.recent_slots.clamp(min=0))
        current = (self.recent_slots >= 0) & (self.recent_slots < span) & (held == self.recent_positions)
        # Stale entries write into a spare column (index ``span``) that is dropped, so they never clobber.
        index = torch.where(current, self.recent_slots, torch.full_like(self.recent_slots, span))
        b, h, _, d = self.recent_keys.shape
        index4 = index.view(b, 1, -1, 1).expand(b, h, -1, d)
        out = []
        for q, s, recent in (
            (self.keys, self.key_scales, self.recent_keys),
            (self.values, self.value_scales, self.recent_values),
        ):
            full = torch.empty(b, h, span + 1, d, device=q.device, dtype=self.dtype)
            full[:, :, :span] = q[:, :, :span].to(self.dtype) * s[:, :, :span, None]
            full.scatter_(2, index4, recent)
            out.append(full[:, :, :span])
        return out[0], out[1]

    def reset(self, mask: torch.Tensor | None = None) -> None:
        super().reset(mask)
        if mask is None:
            self.recent_slots.fill_(-1)
        else:
            self.recent_slots.masked_fill_(mask.to(self.recent_slots.device)[:, None], -1)

    @property
    def nbytes(self) -> int:
        tensors = (
            self.keys,
            self.values,
            self.key_scales,
            self.value_scales,
            self.recent_keys,
            self.recent_values,
            self.recent_slots,
            self.recent_positions,
            self.slot_positions,
        )
        return sum(t.nbytes for t in tensors)


def int8_window_cache_factory(window: int = DEFAULT_WINDOW):
    """A ``cache_factory`` for :class:`~reference_model.lm.transformer.Attention` building this cache."""
    return functools.partial(Int8WindowKVCache, window=window)

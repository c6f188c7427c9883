"""Mimi's encoder/decoder transformers: pre-LayerNorm, GELU FFN, layer scale, interleaved RoPE, causal
attention limited to ``context`` steps; module tree and keys as moshi's ``ProjectedTransformer``.

Positions are absolute and per batch item (``TransformerState.offset``), so one item can be reset while
the others go on. The KV cache is a ring buffer written with per-item indices; it holds ``context + 1``
steps so the first query of a 2-step chunk still sees its full context, as offline (moshi's holds
``context`` and drops that one key once a stream passes 10 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..slots import write_slots


def rope_tables(
    positions: torch.Tensor, head_dim: int, max_period: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of moshi's interleaved RoPE for positions [B, T] -> [B, 1, T, head_dim / 2] each."""
    ds = torch.arange(head_dim // 2, device=positions.device, dtype=torch.float32)
    freqs = torch.exp(ds * (-math.log(max_period) * 2 / head_dim))
    ts = positions.float().view(positions.shape[0], 1, -1, 1)
    return torch.cos(freqs * ts), torch.sin(freqs * ts)


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate interleaved (real, imaginary) pairs of x [B, H, T, D] (moshi's ``apply_rope`` arithmetic)."""
    rotr, roti = rope
    d = x.shape[-1]
    x2 = x.view(*x.shape[:-1], d // 2, 2)
    xr, xi = x2[..., 0].float(), x2[..., 1].float()
    out = torch.stack([xr * rotr - xi * roti, xr * roti + xi * rotr], dim=-1)
    return out.view(*x.shape).to(x.dtype)


@dataclass
class KVState:
    keys: torch.Tensor  # [B, H, capacity, D]
    values: torch.Tensor  # [B, H, capacity, D]

    def reset(self, mask: torch.Tensor) -> None:
        pass  # stale entries are masked through TransformerState.positions


@dataclass
class TransformerState:
    offset: torch.Tensor  # [B] absolute position of the next step
    positions: (
        torch.Tensor
    )  # [B, capacity] position held by each ring slot (the same for all layers), -1 empty
    layers: list

    def reset(self, mask: torch.Tensor) -> None:
        self.offset[mask] = 0
        self.positions[mask] = -1


@dataclass
class StepContext:
    """What every layer of one call shares: RoPE tables, attention mask, ring-buffer write slots."""

    rope: tuple[torch.Tensor, torch.Tensor]
    mask: torch.Tensor  # [B, 1, T, T_keys] bool
    slots: torch.Tensor | None  # [B, T] ring indices written by this call (streaming only)


class StreamingMultiheadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, context: int | None, max_period: float) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.context = context
        self.max_period = max_period
        self.backend = "sdpa"
        # Lists of one as in moshi (whose weights_per_step variant has several): keys in_projs.0, out_projs.0
        self.in_projs = nn.ModuleList([nn.Linear(embed_dim, 3 * embed_dim, bias=False)])
        self.out_projs = nn.ModuleList([nn.Linear(embed_dim, embed_dim, bias=False)])

    def new_state(self, batch_size: int, capacity: int) -> KVState:
        w = self.in_projs[0].weight
        shape = (batch_size, self.num_heads, capacity, self.head_dim)
        return KVState(
            keys=torch.zeros(shape, device=w.device, dtype=w.dtype),
            values=torch.zeros(shape, device=w.device, dtype=w.dtype),
        )

    def forward(self, x: torch.Tensor, ctx: StepContext, state: KVState | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.in_projs[0](x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = apply_rope(qkv[0], ctx.rope), apply_rope(qkv[1], ctx.rope), qkv[2]
        if state is not None:
            write_slots(state.keys, ctx.slots.view(b, t), k)  # not scatter_: see write_slots
            write_slots(state.values, ctx.slots.view(b, t), v)
            k, v = state.keys, state.values
        out = F.scaled_dot_product_attention(q, k, v, ctx.mask)
        out = out.transpose(1, 2).reshape(b, t, self.embed_dim)
        return self.out_projs[0](out)


class LayerScale(nn.Module):
    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


class StreamingTransformerLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dim_feedforward: int,
        context: int | None,
        max_period: float,
        layer_scale: float | None,
    ) -> None:
        super().__init__()
        self.self_attn = StreamingMultiheadAttention(d_model, num_heads, context, max_period)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=False)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=False)
        if layer_scale is None:
            self.layer_scale_1: nn.Module = nn.Identity()
            self.layer_scale_2: nn.Module = nn.Identity()
        else:
            self.layer_scale_1 = LayerScale(d_model, layer_scale)
            self.layer_scale_2 = LayerScale(d_model, layer_scale)

    def forward(self, x: torch.Tensor, ctx: StepContext, state: KVState | None = None) -> torch.Tensor:
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), ctx, state))
        x = x + self.layer_scale_2(self.linear2(F.gelu(self.linear1(self.norm2(x)))))
        return x


class StreamingTransformer(nn.Module):
    def __init__(
        self,
        d_model: int,
        num_heads: int,
        num_layers: int,
        dim_feedforward: int = 2048,
        context: int | None = None,
        max_period: float = 10_000,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.context = context
        self.max_period = max_period
        self.head_dim = d_model // num_heads
        self.layers = nn.ModuleList(
            [
                StreamingTransformerLayer(
                    d_model, num_heads, dim_feedforward, context, max_period, layer_scale
                )
                for _ in range(num_layers)
            ]
        )

    def new_state(self, batch_size: int, chunk: int = 2) -> TransformerState:
        """``chunk``: the most steps fed per call (a codec frame is 2 encoder steps)."""
        if self.context is None:
            raise ValueError("streaming attention needs a finite context")
        device = self.layers[0].linear1.weight.device
        capacity = self.context + chunk - 1
        return TransformerState(
            offset=torch.zeros(batch_size, dtype=torch.long, device=device),
            positions=torch.full((batch_size, capacity), -1, dtype=torch.long, device=device),
            layers=[layer.self_attn.new_state(batch_size, capacity) for layer in self.layers],
        )

    def _mask(self, positions: torch.Tensor, pos_k: torch.Tensor) -> torch.Tensor:
        b, t = positions.shape
        delta = positions.view(b, t, 1) - pos_k.view(b, 1, -1)
        mask = (pos_k.view(b, 1, -1) >= 0) & (delta >= 0)
        if self.context is not None:
            mask = mask & (delta < self.context)
        return mask[:, None]

    def forward(self, x: torch.Tensor, state: TransformerState | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        steps = torch.arange(t, device=x.device).view(1, t)
        if state is None:
            positions = steps.expand(b, t)
            ctx = StepContext(
                rope_tables(positions, self.head_dim, self.max_period), self._mask(positions, positions), None
            )
            for layer in self.layers:
                x = layer(x, ctx)
            return x
        capacity = state.positions.shape[1]
        if t > capacity - self.context + 1:
            raise ValueError(f"streaming chunk of {t} steps is longer than the KV cache allows")
        positions = state.offset.view(b, 1) + steps
        slots = positions % capacity
        state.positions.scatter_(1, slots, positions)
        ctx = StepContext(
            rope_tables(positions, self.head_dim, self.max_period),
            self._mask(positions, state.positions),
            slots,
        )
        for layer, kv in zip(self.layers, state.layers):
            x = layer(x, ctx, kv)
        state.offset += t
        return x


class ProjectedTransformer(nn.Module):
    """[B, C, T] -> [B, C', T] through optional in/out projections (moshi: ``conv_layout=True``)."""

    def __init__(
        self,
        input_dimension: int,
        output_dimensions: list[int],
        d_model: int,
        num_heads: int,
        num_layers: int,
        dim_feedforward: int = 2048,
        context: int | None = None,
        max_period: float = 10_000,
        layer_scale: float | None = None,
        **_ignored,
    ) -> None:
        super().__init__()
        self.transformer = StreamingTransformer(
            d_model, num_heads, num_layers, dim_feedforward, context, max_period, layer_scale
        )
        self.input_proj = (
            None if d_model == input_dimension else nn.Linear(input_dimension, d_model, bias=False)
        )
        self.output_projs = nn.ModuleList(
            [nn.Identity() if d == d_model else nn.Linear(d_model, d, bias=False) for d in output_dimensions]
        )

    def new_state(self, batch_size: int, chunk: int = 2) -> TransformerState:
        return self.transformer.new_state(batch_size, chunk)

    def forward(self, x: torch.Tensor, state: TransformerState | None = None) -> torch.Tensor:
        x = x.transpose(1, 2)
        if self.input_proj is not None:
            x = self.input_proj(x)
        z = self.transformer(x, state)
        return self.output_projs[0](z).transpose(1, 2)

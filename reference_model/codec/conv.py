"""Causal, streamable 1-d convolutions with moshi's module tree (``conv.conv`` / ``convtr.convtr``).

Every module takes ``forward(x, state=None)``: without a state it runs offline from a fresh stream, with
a state (from ``new_state``) it consumes the next chunk and updates the state in place. Offline and
streaming run the same arithmetic, so they agree to float rounding.

The transposed convolution is a matmul followed by an overlap-add: torch's CPU ConvTranspose1d takes
80+ ms for Mimi's first decoder layer on 2 input steps (design.md), the matmul a fraction of a ms.
Large convolutions (>= 1M weights: they all run at low time resolution) are an unfold + matmul for the
same reason: torch's CPU conv1d is 3-25x slower than the matmul on a frame's few output steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ConvState:
    """The last ``kernel - stride`` input samples, and whether the stream has not started (replicate pad)."""

    previous: torch.Tensor  # [B, C_in, K_eff - S]
    first: torch.Tensor  # [B] bool

    def reset(self, mask: torch.Tensor) -> None:
        self.previous[mask] = 0.0
        self.first[mask] = True


@dataclass
class ConvTrState:
    """The tail of the last chunk's output that overlaps the next chunk (without bias)."""

    partial: torch.Tensor  # [B, C_out, K - S]

    def reset(self, mask: torch.Tensor) -> None:
        self.partial[mask] = 0.0


def reset_state(state, mask: torch.Tensor) -> None:
    """Reset every state object nested in lists/tuples for the batch items where ``mask`` is True."""
    if state is None:
        return
    if isinstance(state, list | tuple):
        for s in state:
            reset_state(s, mask)
    else:
        state.reset(mask)


def _check_norm(norm: str) -> None:
    # Mimi is trained with weight norm but released with it folded into the weights ("none").
    if norm != "none":
        raise ValueError(f"conv norm {norm!r} is not supported (only 'none', as in released Mimi weights)")


class NormConv1d(nn.Module):
    """Holds the ``nn.Conv1d`` under the attribute name moshi uses (keys ``...conv.conv.weight``)."""

    def __init__(self, *args, norm: str = "none", **kwargs) -> None:
        super().__init__()
        _check_norm(norm)
        self.conv = nn.Conv1d(*args, **kwargs)


class NormConvTranspose1d(nn.Module):
    """Holds the ``nn.ConvTranspose1d`` under moshi's attribute name (keys ``...convtr.convtr.weight``)."""

    def __init__(self, *args, norm: str = "none", **kwargs) -> None:
        super().__init__()
        _check_norm(norm)
        self.convtr = nn.ConvTranspose1d(*args, **kwargs)


MATMUL_MIN_WEIGHTS = 1 << 20


def _conv1d_matmul(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """conv1d (no padding, groups 1) as unfold + one matmul; x [B, C_in, L] -> [B, C_out, T]."""
    w = conv.weight
    c_out, c_in, k = w.shape
    d, s = conv.dilation[0], conv.stride[0]
    cols = x.unfold(-1, (k - 1) * d + 1, s)  # [B, C_in, T, K_eff]
    if d > 1:
        cols = cols[..., ::d]
    b, _, t, _ = cols.shape
    cols = cols.permute(0, 2, 1, 3).reshape(b * t, c_in * k)
    w2 = w.view(c_out, c_in * k).t()
    y = torch.addmm(conv.bias, cols, w2) if conv.bias is not None else torch.mm(cols, w2)
    return y.view(b, t, c_out).transpose(1, 2)


class StreamingConv1d(nn.Module):
    """Causal Conv1d: left context of ``(kernel-1)*dilation + 1 - stride`` samples, zeros or replicated
    first sample before the stream starts; output length = input length / stride."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        norm: str = "none",
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"pad_mode must be 'constant' or 'replicate', got {pad_mode!r}")
        self.pad_mode = pad_mode
        self.stride = stride
        self.context = (kernel_size - 1) * dilation + 1 - stride
        self.conv = NormConv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            dilation=dilation,
            groups=groups,
            bias=bias,
            norm=norm,
        )
        # Decided by the weight alone, so offline and streaming take the same path.
        self.use_matmul = groups == 1 and in_channels * out_channels * kernel_size >= MATMUL_MIN_WEIGHTS

    @property
    def in_channels(self) -> int:
        return self.conv.conv.in_channels

    def new_state(self, batch_size: int) -> ConvState:
        w = self.conv.conv.weight
        return ConvState(
            previous=torch.zeros(batch_size, self.in_channels, self.context, device=w.device, dtype=w.dtype),
            first=torch.ones(batch_size, dtype=torch.bool, device=w.device),
        )

    def forward(self, x: torch.Tensor, state: ConvState | None = None) -> torch.Tensor:
        if x.shape[-1] % self.stride:
            raise ValueError(f"conv input length {x.shape[-1]} is not a multiple of the stride {self.stride}")
        tp = self.context
        if state is None:
            if tp:
                if self.pad_mode == "replicate":
                    x = torch.cat([x[..., :1].expand(-1, -1, tp), x], dim=-1)
                else:
                    x = F.pad(x, (tp, 0))
            return self._conv(x)
        if tp:
            if self.pad_mode == "replicate":
                first = state.first.view(-1, 1, 1)
                state.previous.copy_(torch.where(first, x[..., :1].expand_as(state.previous), state.previous))
            x = torch.cat([state.previous, x], dim=-1)
            state.previous.copy_(x[..., -tp:])
            if self.pad_mode == "replicate":
                state.first.fill_(False)
        return self._conv(x)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_matmul:
            return _conv1d_matmul(self.conv.conv, x)
        return self.conv.conv(x)


def _overlap_add_parts(conv: nn.ConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """Per-input-step contributions of a transposed conv: [B, C_out, m, T, S] with m = ceil(K / S)."""
    weight = conv.weight  # [C_in, C_out / groups, K]
    c_in, c_out_g, k = weight.shape
    s = conv.stride[0]
    g = conv.groups
    m = -(-k // s)
    if m * s != k:
        weight = F.pad(weight, (0, m * s - k))
    b, _, t = x.shape
    if g == 1:
        # [B, T, C_in] @ [C_in, C_out*K] -> [B, T, C_out, m, S]
        z = torch.matmul(x.transpose(1, 2), weight.reshape(c_in, c_out_g * m * s))
        z = z.view(b, t, c_out_g, m, s).permute(0, 2, 3, 1, 4)
    elif c_out_g == 1 and g == c_in:
        # Channel-wise (Mimi's upsample): each channel scales its own kernel.
        z = x.unsqueeze(-1) * weight.view(1, c_in, 1, m * s)  # [B, C, T, K]
        z = z.view(b, c_in, t, m, s).transpose(2, 3)
    else:
        ci = c_in // g
        z = torch.einsum("bgit,giok->bgokt", x.view(b, g, ci, t), weight.view(g, ci, c_out_g, m * s))
        z = z.reshape(b, g * c_out_g, m, s, t).permute(0, 1, 2, 4, 3)
    return z  # [B, C_out, m, T, S]


class StreamingConvTranspose1d(nn.Module):
    """Causal ConvTranspose1d (trim right): output length = input length * stride."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
        norm: str = "none",
    ) -> None:
        super().__init__()
        self.stride = stride
        self.kernel_size = kernel_size
        self.convtr = NormConvTranspose1d(
            in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias, norm=norm
        )

    def new_state(self, batch_size: int) -> ConvTrState:
        conv = self.convtr.convtr
        w = conv.weight
        m = -(-self.kernel_size // self.stride)
        return ConvTrState(
            torch.zeros(batch_size, conv.out_channels, (m - 1) * self.stride, device=w.device, dtype=w.dtype)
        )

    def forward(self, x: torch.Tensor, state: ConvTrState | None = None) -> torch.Tensor:
        conv = self.convtr.convtr
        z = _overlap_add_parts(conv, x)  # [B, C, m, T, S]
        b, c, m, t, s = z.shape
        # Output block j (length S) sums z[:, :, i, j - i] over i; blocks past T belong to the next chunk.
        if m == 1:
            out = z[:, :, 0]
        elif (
            m == 2
        ):  # every SEANet layer (kernel = 2 * stride): one shifted add, same ops offline and streaming
            prev = z.new_zeros(b, c, 1, s) if state is None else state.partial.view(b, c, 1, s)
            out = z[:, :, 0] + torch.cat([prev, z[:, :, 1, : t - 1]], dim=2)
            if state is not None:
                state.partial.copy_(z[:, :, 1, t - 1])
        else:
            extended = torch.cat([z[:, :, 0], z.new_zeros(b, c, m - 1, s)], dim=2)
            for i in range(1, m):
                extended = extended + F.pad(z[:, :, i], (0, 0, i, m - 1 - i))
            out = extended[:, :, :t]
            if state is not None:
                prev = state.partial.view(b, c, m - 1, s)
                n = min(m - 1, t)
                out = torch.cat([out[:, :, :n] + prev[:, :, :n], out[:, :, n:]], dim=2)
                new_partial = extended[:, :, t:]
                if n < m - 1:  # chunk shorter than the overlap: carry the rest of the old tail
                    new_partial = new_partial + F.pad(prev[:, :, n:], (0, 0, 0, n))
                state.partial.copy_(new_partial.reshape(b, c, (m - 1) * s))
        y = out.reshape(b, c, t * s)
        if conv.bias is not None:
            y = y + conv.bias.view(1, -1, 1)
        return y

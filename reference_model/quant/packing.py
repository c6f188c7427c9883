"""Integer weight formats and their packed storage.

Two formats, both weight-only (activations stay in floating point):

* int8, per output channel, symmetric: ``w ~= q * scale`` with ``q`` in [-127, 127], one scale per row.
* int4, group-wise along the input dimension, asymmetric, in the "tinygemm" convention that the aten
  int4 kernels use: ``w ~= (q - 8) * scale + zero`` with ``q`` in [0, 15], one (scale, zero) per group of
  ``group_size`` input columns. Writing the offset as ``zero = min + 8 * scale`` makes ``q = 0`` land on the
  group's minimum.

Int4 codes are stored two per byte (:func:`pack_int4`): the even column in the low nibble, the odd column
in the high nibble. The aten kernels want their own (opaque) layouts; :mod:`.linear` converts at build time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INT8_MAX = 127
INT4_LEVELS = 16  # codes 0..15
INT4_OFFSET = 8  # tinygemm: w = (q - 8) * scale + zero


@dataclass
class QuantizedWeight:
    """Integer codes of a [N, K] weight plus what turns them back into floats.

    ``q``: int8 [N, K] (int8 format) or uint8 [N, K] holding 0..15 (int4 format, unpacked).
    ``scales``: [N, K // group_size] (a single column for per-channel int8). ``zeros``: same shape, int4 only.
    ``input_scale``: [K] or None; AWQ quantizes ``W * s`` and divides the input by ``s`` at run time.
    """

    bits: int
    group_size: int
    q: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None = None
    input_scale: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)  # type: ignore[return-value]

    def dequantize(self) -> torch.Tensor:
        """The float weight these codes stand for (without the AWQ input scale folded back)."""
        if self.bits == 8:
            return dequantize_int8(self.q, self.scales)
        return dequantize_int4(self.q, self.scales, self.zeros, self.group_size)

    def effective_weight(self) -> torch.Tensor:
        """The weight the quantized layer applies to its raw input: ``W_q / s`` for AWQ, else ``W_q``."""
        w = self.dequantize()
        return w if self.input_scale is None else w / self.input_scale


# --- int8 per channel ------------------------------------------------------------------------------


def int8_qparams(w: torch.Tensor) -> torch.Tensor:
    """Symmetric scale per row of ``w`` [N, k] -> [N]."""
    return (w.abs().amax(dim=1).float() / INT8_MAX).clamp(min=1e-12)


def quantize_int8(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``w`` [N, k], ``scale`` [N] -> int8 codes [N, k]."""
    return torch.clamp(torch.round(w.float() / scale[:, None]), -INT8_MAX, INT8_MAX).to(torch.int8)


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return q.float() * scales.reshape(q.shape[0], -1).float()


# --- int4 group-wise ---------------------------------------------------------------------------------


def int4_qparams(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric (scale, zero) per row of one group ``w`` [N, g] -> ([N], [N]), tinygemm convention."""
    w = w.float()
    lo, hi = w.amin(dim=1), w.amax(dim=1)
    scale = ((hi - lo) / (INT4_LEVELS - 1)).clamp(min=1e-6)
    return scale, lo + INT4_OFFSET * scale


def quantize_int4(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """One group ``w`` [N, g] -> uint8 codes 0..15 [N, g]."""
    lo = zero - INT4_OFFSET * scale
    q = torch.round((w.float() - lo[:, None]) / scale[:, None])
    return torch.clamp(q, 0, INT4_LEVELS - 1).to(torch.uint8)


def dequantize_int4(
    q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int
) -> torch.Tensor:
    assert zeros is not None, "int4 needs zeros"
    s = scales.float().repeat_interleave(group_size, dim=1)
    z = zeros.float().repeat_interleave(group_size, dim=1)
    return (q.float() - INT4_OFFSET) * s + z


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..15 [N, K] (K even) -> uint8 [N, K // 2]; even column low nibble, odd high."""
    if q.shape[-1] % 2:
        raise ValueError(f"int4 packing needs an even number of columns, got {q.shape[-1]}")
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`."""
    lo, hi = packed & 0x0F, packed >> 4
    return torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], -1)


# --- one-shot round to nearest, both formats ----------------------------------------------------------


def group_qparams(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scale, zero) of one group of columns for ``bits``; zero is None for symmetric int8."""
    if bits == 8:
        return int8_qparams(w), None
    return int4_qparams(w)


def quantize_group(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int
) -> torch.Tensor:
    return quantize_int8(w, scale) if bits == 8 else quantize_int4(w, scale, zero)  # type: ignore[arg-type]


def dequantize_group(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int
) -> torch.Tensor:
    if bits == 8:
        return q.float() * scale[:, None]
    return (q.float() - INT4_OFFSET) * scale[:, None] + zero[:, None]  # type: ignore[index]


def check_format(bits: int, group_size: int, in_features: int) -> None:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if group_size <= 0 or in_features % group_size:
        raise ValueError(f"group size {group_size} does not divide in_features {in_features}")


def quantize_weight(w: torch.Tensor, bits: int, group_size: int | None = None) -> QuantizedWeight:
    """Round-to-nearest quantization of ``w`` [N, K]: int8 per channel (group_size None or K) or int4 by
    groups of ``group_size`` columns."""
    n, k = w.shape
    group_size = k if group_size is None else group_size
    check_format(bits, group_size, k)
    qs, scales, zeros = [], [], []
    for start in range(0, k, group_size):
        block = w[:, start : start + group_size]
        scale, zero = group_qparams(block, bits)
        qs.append(quantize_group(block, scale, zero, bits))
        scales.append(scale)
        zeros.append(zero)
    return QuantizedWeight(
        bits=bits,
        group_size=group_size,
        q=torch.cat(qs, dim=1),
        scales=torch.stack(scales, dim=1),
        zeros=None if bits == 8 else torch.stack(zeros, dim=1),  # type: ignore[arg-type]
    )

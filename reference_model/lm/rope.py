"""Interleaved rotary position embedding (Su et al. 2021), as Moshi applies it.

The angles are computed once per step from ABSOLUTE positions (one per batch item) and shared by every
layer; a layer never counts positions itself, so skipping a layer for a step cannot shift them.
The arithmetic (fp32 angles, ``exp(-log(max_period) * 2i / D)`` frequencies, rotation in fp32) is
Moshi's (moshi/modules/rope.py), so outputs match it to the last bit of the fp32 rotation.
"""

from __future__ import annotations

import math

import torch


def rope_frequencies(
    head_dim: int, max_period: float, device: torch.device | str | None = None
) -> torch.Tensor:
    ds = torch.arange(head_dim // 2, device=device, dtype=torch.float32)
    return torch.exp(ds * (-math.log(max_period) * 2 / head_dim))


def rope_angles(positions: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, T] (long) -> (cos, sin), each [B, 1, T, D/2] fp32, ready to broadcast over heads."""
    angles = positions.float()[:, None, :, None] * freqs
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, D] whose (real, imaginary) parts are interleaved along D."""
    B, H, T, D = x.shape
    pairs = x.view(B, H, T, D // 2, 2).float()
    xr, xi = pairs[..., 0], pairs[..., 1]
    out = torch.stack([xr * cos - xi * sin, xr * sin + xi * cos], dim=-1)
    return out.view(B, H, T, D).to(x.dtype)

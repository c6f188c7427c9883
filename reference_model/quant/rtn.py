"""Round to nearest: the baseline every calibrated method must beat. No data needed."""

from __future__ import annotations

import torch

from .packing import QuantizedWeight, quantize_weight


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int | None = None) -> QuantizedWeight:
    """Quantize ``weight`` [N, K]: int8 per output channel, or int4 by groups of ``group_size`` inputs."""
    return quantize_weight(weight.detach().float(), bits, None if bits == 8 else group_size)

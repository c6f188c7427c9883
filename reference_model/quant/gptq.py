"""GPTQ (Frantar et al., 2022): quantize a weight one input column at a time and push each column's
rounding error onto the columns not yet quantized, weighted by the inverse Hessian of the layer's
calibration inputs, so that the layer's OUTPUT error ``||X W.T - X Q.T||`` stays small.

Follows the reference algorithm (and gpt-fast's GPTQ.py): H = 2/n * X.T X, dead inputs zeroed, damping
``damp * mean(diag H)`` on the diagonal, the upper Cholesky factor of H^-1, blocks of columns with lazy
batch updates, and (for int4) each group's scale/zero computed from the error-updated weights when the
column loop reaches the group. No activation reordering, so groups stay contiguous and packable.
"""

from __future__ import annotations

import torch

from .packing import QuantizedWeight, check_format, dequantize_group, group_qparams, quantize_group


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    *,
    damp: float = 0.01,
    block_size: int = 128,
) -> QuantizedWeight:
    """``weight`` [N, K]; ``hessian`` [K, K] = sum of x x^T over calibration rows (any positive scale).
    Runs on the weight's device (the factorisation in float64 there)."""
    w = weight.detach().float().clone()
    n, k = w.shape
    group_size = k if (bits == 8 or group_size is None) else group_size
    check_format(bits, group_size, k)
    # A block must hold whole groups so a group's qparams are always computed from up-to-date columns.
    if bits == 4:
        block_size = max(block_size // group_size, 1) * group_size

    h = hessian.detach().to(w.device, torch.float64).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0  # an input that is always zero: any weight is fine, quantize it as zero
    w[:, dead] = 0.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype, device=h.device)
    # The factorisation in float64 (cheap, K x K); the column loop in float32 like the reference.
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()

    q = torch.zeros(n, k, dtype=torch.int8 if bits == 8 else torch.uint8, device=w.device)
    n_groups = k // group_size
    scales = torch.zeros(n, n_groups, dtype=torch.float32, device=w.device)
    zeros = torch.zeros(n, n_groups, dtype=torch.float32, device=w.device)
    if bits == 8:  # per channel: one scale per row from the whole (original) row, as in the reference
        scale, zero = group_qparams(w, bits)
        scales[:, 0] = scale

    for b0 in range(0, k, block_size):
        b1 = min(b0 + block_size, k)
        w_blk = w[:, b0:b1].clone()
        err_blk = torch.zeros_like(w_blk)
        hinv_blk = hinv[b0:b1, b0:b1]
        for i in range(b1 - b0):
            col = b0 + i
            if bits == 4 and col % group_size == 0:
                scale, zero = group_qparams(w_blk[:, i : i + group_size], bits)
                scales[:, col // group_size], zeros[:, col // group_size] = scale, zero
            codes = quantize_group(w_blk[:, i : i + 1], scale, zero, bits)
            q[:, col] = codes[:, 0]
            deq = dequantize_group(codes, scale, zero, bits)[:, 0]
            err = (w_blk[:, i] - deq) / hinv_blk[i, i]
            w_blk[:, i:] -= err[:, None] * hinv_blk[i, i:][None, :]
            err_blk[:, i] = err
        w[:, b1:] -= err_blk @ hinv[b0:b1, b1:]

    return QuantizedWeight(bits, group_size, q, scales, None if bits == 8 else zeros)

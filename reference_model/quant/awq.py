"""AWQ (Lin et al., 2023): activation-aware weight quantization.

Input channels that carry large activations matter most. AWQ scales those weight columns up before
rounding (``W * s``) and divides the input by the same ``s`` at run time, so the product is unchanged in
full precision while the salient columns lose less to rounding. ``s = mean|x|^alpha`` (normalised), with
``alpha`` searched on a grid to minimise the layer's output error on calibration rows; ``alpha = 0`` is
plain round to nearest, so the search never does worse than RTN on those rows. Then, as in the paper's
``auto_clip``, each group's range is shrunk by the ratio that minimises that group's output error.

Here ``s`` stays in the quantized layer as an input scale (one multiply per call) rather than being folded
into the previous op, which keeps the transform local to one layer (:class:`~.linear.Int8WeightOnlyLinear`
and :class:`~.linear.Int4WeightOnlyLinear` carry it as ``input_scale_inv``).
"""

from __future__ import annotations

import torch

from .packing import INT4_LEVELS, INT4_OFFSET, INT8_MAX, QuantizedWeight, check_format, quantize_weight


def _output_error(x: torch.Tensor, w_ref: torch.Tensor, w_q: torch.Tensor) -> float:
    return float(((x @ (w_ref - w_q).T) ** 2).mean())


def awq_quantize(
    weight: torch.Tensor,
    x: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    *,
    act_abs_mean: torch.Tensor | None = None,
    n_grid: int = 20,
    clip_ratios: tuple[float, ...] = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7),
) -> QuantizedWeight:
    """``weight`` [N, K]; ``x`` [n, K] calibration inputs of this layer; ``act_abs_mean`` [K] (default:
    from ``x``)."""
    w = weight.detach().float()
    x = x.detach().to(w.device, torch.float32)
    n, k = w.shape
    group_size = k if (bits == 8 or group_size is None) else group_size
    check_format(bits, group_size, k)
    mag = x.abs().mean(dim=0) if act_abs_mean is None else act_abs_mean.to(w.device, torch.float32)
    mag = mag.clamp(min=1e-8)

    best_err, best_s = float("inf"), torch.ones(k, device=w.device)
    for step in range(n_grid + 1):
        alpha = step / n_grid
        s = mag.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()  # centre the scales around 1 so neither side saturates
        w_q = quantize_weight(w * s, bits, group_size).dequantize() / s
        err = _output_error(x, w, w_q)
        if err < best_err:
            best_err, best_s = err, s
    qw = _clip_search(w * best_s, x / best_s, bits, group_size, clip_ratios)
    qw.input_scale = best_s
    return qw


def _clip_search(
    w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int, ratios: tuple[float, ...]
) -> QuantizedWeight:
    """Per group and row, shrink the quantization range by the ratio that minimises the group's output
    error (groups are scored independently, as in AWQ's auto_clip); ratio 1.0 is round to nearest."""
    qw = quantize_weight(w, bits, group_size)
    best = torch.full(qw.scales.shape, float("inf"), device=w.device)
    for r in ratios:
        cand = _quantize_clipped(w, bits, group_size, r)
        deq = cand.dequantize()
        for g in range(qw.scales.shape[1]):
            cols = slice(g * group_size, (g + 1) * group_size)
            err = ((x[:, cols] @ (w[:, cols] - deq[:, cols]).T) ** 2).mean(dim=0)  # [N]
            better = err < best[:, g]
            best[better, g] = err[better]
            qw.q[better, cols] = cand.q[better, cols]
            qw.scales[better, g] = cand.scales[better, g]
            if bits == 4:
                qw.zeros[better, g] = cand.zeros[better, g]  # type: ignore[index]
    return qw


def _quantize_clipped(w: torch.Tensor, bits: int, group_size: int, ratio: float) -> QuantizedWeight:
    n, k = w.shape
    wg = w.reshape(n, k // group_size, group_size)
    if bits == 8:
        scale = (wg.abs().amax(dim=2) * ratio / INT8_MAX).clamp(min=1e-12)
        q = torch.clamp(torch.round(wg / scale[..., None]), -INT8_MAX, INT8_MAX).to(torch.int8)
        return QuantizedWeight(8, group_size, q.reshape(n, k), scale)
    lo, hi = wg.amin(dim=2) * ratio, wg.amax(dim=2) * ratio
    scale = ((hi - lo) / (INT4_LEVELS - 1)).clamp(min=1e-6)
    q = torch.clamp(torch.round((wg - lo[..., None]) / scale[..., None]), 0, INT4_LEVELS - 1).to(torch.uint8)
    return QuantizedWeight(4, group_size, q.reshape(n, k), scale, lo + INT4_OFFSET * scale)

"""Replace a model's linear layers by weight-only quantized ones, computed by RTN, GPTQ or AWQ.

:func:`quantize_model` is the one entry point the flags use. It walks ``model.named_modules()``, picks the
linear-like layers ``include`` accepts (``nn.Linear``, and ``nn.Conv1d`` with kernel 1 wrapped as a linear
over channels), quantizes each weight with the chosen method, and puts an :class:`Int8WeightOnlyLinear` /
:class:`Int4WeightOnlyLinear` in its place. GPTQ and AWQ need ``stats`` from :mod:`.calibrate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .awq import awq_quantize
from .calibrate import LinearInputStats, is_linear_like
from .dynamic import Int8DynamicLinear
from .gptq import gptq_quantize
from .linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear, tensor_bytes
from .packing import QuantizedWeight
from .rtn import rtn_quantize

METHODS = ("rtn", "gptq", "awq")
# How the codes run. auto: the weight-only kernel in the activation dtype it is fastest in on this device
# (linear.fast_activation_dtype); fp32 / bf16: that weight-only kernel in that activation dtype; dynamic:
# int8 only, fbgemm's W8A8 kernel (activations quantized at run time, CPU).
KERNELS = ("auto", "fp32", "bf16", "dynamic")
DEFAULT_GROUP_SIZE = 128
# GPTQ's damping. The paper's 0.01 assumes ~260k calibration rows; we calibrate on ~1000 streamed frames,
# where more damping keeps GPTQ from fitting the calibration subspace. Measured on the tiny LM (one
# temporal layer, 640 calibration rows, held-out streams): 0.01 -> 0.97x RTN's output error, 0.1 -> 0.91x;
# with 80 rows GPTQ was WORSE than RTN (1.27x at 0.01, 1.07x at 0.1).
GPTQ_DAMP = 0.1


class QuantizedConv1x1(nn.Module):
    """A kernel-1 ``Conv1d`` as a quantized linear over channels: [B, C_in, T] -> [B, C_out, T]."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


@dataclass
class QuantSummary:
    """What :func:`quantize_model` did: layers quantized (name -> kernel), layers left alone (and why),
    bytes before and after."""

    bits: int
    method: str
    group_size: int | None
    quantized: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0
    cache: str = "off"  # quantized-weight cache: "hit", "miss" (computed, then stored) or "off"
    kernel: str = "auto"  # what was asked (KERNELS); ``quantized`` says what each layer runs

    def to_dict(self) -> dict:
        return {
            "bits": self.bits,
            "method": self.method,
            "group_size": self.group_size,
            "quantized": dict(self.quantized),
            "skipped": dict(self.skipped),
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "cache": self.cache,
            "kernel": self.kernel,
        }


def pick_group_size(in_features: int, preferred: int = DEFAULT_GROUP_SIZE) -> int | None:
    """The largest of (preferred, 64, 32) dividing ``in_features``; None if none does."""
    for g in (preferred, 64, 32):
        if g <= in_features and in_features % g == 0:
            return g
    return None


def quantize_weight_by(
    method: str,
    weight: torch.Tensor,
    bits: int,
    group_size: int | None,
    stats: LinearInputStats | None,
) -> QuantizedWeight:
    """One weight [N, K] by ``method``; GPTQ/AWQ use the layer's calibration ``stats``."""
    if method == "rtn":
        return rtn_quantize(weight, bits, group_size)
    if stats is None:
        raise ValueError(f"{method} needs calibration statistics for every layer it quantizes")
    if method == "gptq":
        return gptq_quantize(weight, stats.hessian, bits, group_size, damp=GPTQ_DAMP)
    if method == "awq":
        return awq_quantize(weight, stats.samples, bits, group_size, act_abs_mean=stats.act_abs_mean)
    raise ValueError(f"unknown quantization method {method!r} (known: {', '.join(METHODS)})")


def _as_linear_weight(module: nn.Module) -> torch.Tensor:
    # Codes are computed where the weight lives (a GPU quantizes the 7B in seconds, one CPU thread in hours).
    w = module.weight.detach()
    return w[:, :, 0] if isinstance(module, nn.Conv1d) else w


def check_kernel(bits: int, kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if kernel == "dynamic" and bits != 8:
        raise ValueError("the dynamic kernel is int8 only (fbgemm has no int4 W4A8)")


def make_quantized(module: nn.Module, qw: QuantizedWeight, kernel: str = "auto") -> nn.Module:
    """The quantized replacement for a linear-like ``module`` holding ``qw``, run by ``kernel``."""
    check_kernel(qw.bits, kernel)
    w = module.weight
    if kernel == "dynamic":
        layer: nn.Module = Int8DynamicLinear(qw, module.bias, dtype=w.dtype, device=w.device)
    else:
        cls = Int8WeightOnlyLinear if qw.bits == 8 else Int4WeightOnlyLinear
        layer = cls(qw, module.bias, dtype=w.dtype, device=w.device, activation_dtype=kernel)
    return QuantizedConv1x1(layer) if isinstance(module, nn.Conv1d) else layer


def quantize_model(
    model: nn.Module,
    bits: int,
    method: str = "rtn",
    *,
    include: Callable[[str, nn.Module], bool] = lambda name, module: True,
    stats: dict[str, LinearInputStats] | None = None,
    group_size: int = DEFAULT_GROUP_SIZE,
    precomputed: dict[str, QuantizedWeight] | None = None,
    produced: dict[str, QuantizedWeight] | None = None,
    kernel: str = "auto",
) -> QuantSummary:
    """Swap every linear-like layer of ``model`` that ``include`` accepts for a quantized one run by
    ``kernel`` (:data:`KERNELS`), in place.

    ``precomputed``: codes already computed for this model and method (the on-disk cache), used instead of
    quantizing; ``produced``: filled with the codes computed here (what the cache stores)."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r} (known: {', '.join(METHODS)})")
    check_kernel(bits, kernel)
    summary = QuantSummary(
        bits, method, None if bits == 8 else group_size, bytes_before=tensor_bytes(model), kernel=kernel
    )
    targets = [(n, m) for n, m in model.named_modules() if is_linear_like(m) and include(n, m)]
    for name, module in targets:
        weight = _as_linear_weight(module)
        k = weight.shape[1]
        g = None
        if bits == 4:
            g = pick_group_size(k, group_size)
            if g is None or k % 2:
                summary.skipped[name] = f"in_features {k} has no int4 group size"
                continue
        if precomputed is not None:
            if name not in precomputed:
                summary.skipped[name] = "never called during calibration"
                continue
            qw = precomputed[name]
        else:
            layer_stats = None if stats is None else stats.get(name)
            if method != "rtn" and layer_stats is None:
                summary.skipped[name] = "never called during calibration"
                continue
            qw = quantize_weight_by(method, weight, bits, g, layer_stats)
        if produced is not None:
            produced[name] = qw
        new = make_quantized(module, qw, kernel)
        _set_submodule(model, name, new)
        inner = new.linear if isinstance(new, QuantizedConv1x1) else new
        summary.quantized[name] = inner.kernel_label()
    summary.bytes_after = tensor_bytes(model)
    return summary


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)  # works for ModuleList children too ("in_projs.0")

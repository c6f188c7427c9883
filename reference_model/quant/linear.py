"""Weight-only quantized linear layers (gpt-fast style): they hold ONLY the packed integer weight, its
scales (and zeros), and optionally a bias and an AWQ input scale.

Kernels: ``torch.ops.aten._weight_int8pack_mm`` (CPU and CUDA) for int8, and the tinygemm int4 kernels
(``_weight_int4pack_mm_for_cpu`` on CPU; ``_weight_int4pack_mm`` on CUDA, bf16 only). Each kernel is probed
once per (device type, dtype) against the plain formula; where it is missing or fails the probe the layer
uses the readable fallback (dequantize, then ``F.linear``), which computes the same thing.

The int4 kernels need the weight in their own opaque layout, fixed when the layer is built: ``layout`` says
which ("aten-cpu", "aten-cuda" or "reference" = :func:`~.packing.pack_int4` nibbles). A layer built for one
device type cannot run its aten layout on another; it says so in one line.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .packing import INT4_OFFSET, QuantizedWeight, dequantize_int8, pack_int4, unpack_int4

INT4_INNER_K_TILES = 8  # tinygemm tiling; 2, 4 or 8 are valid


# --- kernel probes ------------------------------------------------------------------------------------


def _aten_op(name: str):
    return getattr(torch.ops.aten, name, None)


@functools.cache
def int8_kernel_ok(device_type: str, dtype: torch.dtype) -> bool:
    """Whether ``_weight_int8pack_mm`` exists here and matches the formula for this device and dtype."""
    op = _aten_op("_weight_int8pack_mm")
    if op is None or device_type not in ("cpu", "cuda"):
        return False
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-127, 128, (32, 64), generator=g, dtype=torch.int8)
    s, x = torch.rand(32, generator=g) + 0.5, torch.randn(4, 64, generator=g)
    try:
        y = op(x.to(device_type, dtype), w.to(device_type), s.to(device_type, dtype)).float().cpu()
    except (RuntimeError, NotImplementedError):
        return False
    ref = x.to(dtype).float() @ (w.float() * s.to(dtype).float()[:, None]).T
    return bool(torch.allclose(y, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item()))


def int4_layout_for(
    device_type: str, dtype: torch.dtype, out_features: int, in_features: int, group: int
) -> str:
    """The int4 weight layout a layer of this shape gets on this device: an aten kernel's, or "reference"."""
    if device_type == "cpu" and out_features % 16 == 0 and in_features % group == 0:
        return "aten-cpu" if _int4_kernel_ok("cpu", dtype) else "reference"
    if (
        device_type == "cuda"
        and dtype == torch.bfloat16
        and out_features % 8 == 0
        and in_features % (INT4_INNER_K_TILES * 16) == 0
        and group in (32, 64, 128, 256)
    ):
        return "aten-cuda" if _int4_kernel_ok("cuda", dtype) else "reference"
    return "reference"


@functools.cache
def _int4_kernel_ok(device_type: str, dtype: torch.dtype) -> bool:
    g = torch.Generator().manual_seed(0)
    n, k, group = 32, 256, 64
    q = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    scales = torch.rand(n, k // group, generator=g) + 0.5
    zeros = torch.randn(n, k // group, generator=g)
    x = torch.randn(4, k, generator=g)
    try:
        w, sz = _to_aten_int4(q, scales, zeros, device_type, dtype)
        y = _int4_aten_mm(x.to(device_type, dtype), w, group, sz, device_type).float().cpu()
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return False
    qw = QuantizedWeight(4, group, q, scales.to(dtype).float(), zeros.to(dtype).float())
    ref = x.to(dtype).float() @ qw.dequantize().T
    return bool(torch.allclose(y, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item()))


def _to_aten_int4(
    q, scales, zeros, device_type: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [N, K] 0..15 + per-group scales/zeros [N, G] -> (kernel-layout weight, scales_and_zeros
    [G, N, 2] in ``dtype``)."""
    sz = torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous().to(device_type, dtype)
    if device_type == "cpu":
        w = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            q.to(torch.int32).contiguous(), INT4_INNER_K_TILES
        )
    else:
        # The CUDA converter takes two codes per byte, the even column in the high nibble.
        q = q.to(device_type, torch.int32)
        packed = ((q[:, 0::2] << 4) | q[:, 1::2]).to(torch.uint8)
        w = torch.ops.aten._convert_weight_to_int4pack(packed.contiguous(), INT4_INNER_K_TILES)
    return w, sz


def _int4_aten_mm(x2d, w, group: int, sz, device_type: str) -> torch.Tensor:
    if device_type == "cpu":
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2d, w, group, sz)
    return torch.ops.aten._weight_int4pack_mm(x2d, w, group, sz)


# --- the layers -------------------------------------------------------------------------------------


class _WeightOnlyLinear(nn.Module):
    in_features: int
    out_features: int

    def _register_common(
        self, qw: QuantizedWeight, bias: torch.Tensor | None, dtype: torch.dtype, device
    ) -> None:
        self.register_buffer("bias", None if bias is None else bias.detach().to(device, dtype).clone())
        inv = None if qw.input_scale is None else (1.0 / qw.input_scale.float()).to(device, dtype)
        # AWQ: the weight was quantized as W * s, so the input is divided by s (stored as its inverse).
        self.register_buffer("input_scale_inv", inv)

    def _prepare_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        if self.input_scale_inv is not None:
            x = x * self.input_scale_inv
        return x.reshape(-1, self.in_features), x.shape[:-1]

    def _finish(self, y: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel_name()}"
        )

    def kernel_name(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


class Int8WeightOnlyLinear(_WeightOnlyLinear):
    """``y = (x / s_in) @ (q * scale).T + b`` with int8 ``q`` [N, K] and one scale per output channel."""

    def __init__(
        self, qw: QuantizedWeight, bias: torch.Tensor | None = None, *, dtype=torch.float32, device=None
    ):
        super().__init__()
        if qw.bits != 8 or qw.scales.shape[1] != 1:
            raise ValueError("Int8WeightOnlyLinear takes per-channel int8 codes")
        device = qw.q.device if device is None else torch.device(device)
        self.out_features, self.in_features = qw.q.shape
        self.force_reference = False  # tests and benchmarks flip this to time/verify the fallback
        self.register_buffer("weight", qw.q.to(device, torch.int8).contiguous())
        self.register_buffer("scales", qw.scales[:, 0].to(device, dtype).contiguous())
        self._register_common(qw, bias, dtype, device)

    @classmethod
    def from_linear(cls, linear: nn.Linear, qw: QuantizedWeight) -> Int8WeightOnlyLinear:
        return cls(qw, linear.bias, dtype=linear.weight.dtype, device=linear.weight.device)

    def kernel_name(self) -> str:
        ok = int8_kernel_ok(self.weight.device.type, self.scales.dtype) and not self.force_reference
        return "aten._weight_int8pack_mm" if ok else "reference"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d, lead = self._prepare_input(x)
        if not self.force_reference and int8_kernel_ok(x.device.type, x.dtype):
            y = torch.ops.aten._weight_int8pack_mm(x2d.contiguous(), self.weight, self.scales.to(x.dtype))
        else:
            y = F.linear(x2d, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        return self._finish(y, lead)

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight applied to the raw input (AWQ input scale included)."""
        w = dequantize_int8(self.weight, self.scales.float())
        return w if self.input_scale_inv is None else w * self.input_scale_inv.float()


class Int4WeightOnlyLinear(_WeightOnlyLinear):
    """``y = (x / s_in) @ W.T + b`` with ``W = (q - 8) * scale + zero`` by groups of ``group_size`` inputs,
    ``q`` 4-bit, two per byte."""

    def __init__(
        self,
        qw: QuantizedWeight,
        bias: torch.Tensor | None = None,
        *,
        dtype=torch.float32,
        device=None,
        layout: str = "auto",
    ):
        super().__init__()
        if qw.bits != 4:
            raise ValueError("Int4WeightOnlyLinear takes int4 codes")
        device = qw.q.device if device is None else torch.device(device)
        self.out_features, self.in_features = qw.q.shape
        self.group_size = qw.group_size
        if layout == "auto":
            layout = int4_layout_for(device.type, dtype, self.out_features, self.in_features, self.group_size)
        if layout not in ("aten-cpu", "aten-cuda", "reference"):
            raise ValueError(f"unknown int4 layout {layout!r}")
        self.layout = layout
        assert qw.zeros is not None
        if layout == "reference":
            weight = pack_int4(qw.q.cpu()).to(device)
            sz = torch.stack([qw.scales, qw.zeros], dim=-1).transpose(0, 1).to(device, dtype).contiguous()
        else:
            weight, sz = _to_aten_int4(qw.q.cpu(), qw.scales.cpu(), qw.zeros.cpu(), device.type, dtype)
        self.register_buffer("weight", weight)
        self.register_buffer("scales_and_zeros", sz)  # [K // group_size, N, 2], the tinygemm convention
        self._register_common(qw, bias, dtype, device)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, qw: QuantizedWeight, layout: str = "auto"
    ) -> Int4WeightOnlyLinear:
        return cls(qw, linear.bias, dtype=linear.weight.dtype, device=linear.weight.device, layout=layout)

    def kernel_name(self) -> str:
        return {"aten-cpu": "aten._weight_int4pack_mm_for_cpu", "aten-cuda": "aten._weight_int4pack_mm"}.get(
            self.layout, "reference"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d, lead = self._prepare_input(x)
        if self.layout == "reference":
            y = F.linear(x2d, self._reference_weight(x.dtype))
        else:
            want = self.layout.removeprefix("aten-")
            if x.device.type != want:
                raise RuntimeError(
                    f"int4 layer packed for {want}, called on {x.device.type}; quantize on {want}"
                )
            y = _int4_aten_mm(x2d.contiguous(), self.weight, self.group_size, self.scales_and_zeros, want)
        return self._finish(y, lead)

    def _reference_weight(self, dtype: torch.dtype) -> torch.Tensor:
        q = unpack_int4(self.weight).to(dtype)
        scales = self.scales_and_zeros[..., 0].T.to(dtype).repeat_interleave(self.group_size, dim=1)
        zeros = self.scales_and_zeros[..., 1].T.to(dtype).repeat_interleave(self.group_size, dim=1)
        return (q - INT4_OFFSET) * scales + zeros

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight applied to the raw input (AWQ input scale included). For an aten layout it is
        read back through the kernel itself (``I @ W.T``), so it checks the packing end to end."""
        if self.layout == "reference":
            w = self._reference_weight(torch.float32)
        else:
            eye = torch.eye(self.in_features, device=self.weight.device, dtype=self.scales_and_zeros.dtype)
            dev = self.layout.removeprefix("aten-")
            w = _int4_aten_mm(eye, self.weight, self.group_size, self.scales_and_zeros, dev).T.float()
        return w if self.input_scale_inv is None else w * self.input_scale_inv.float()


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``module`` (what the weights cost in memory)."""
    tensors = list(module.parameters()) + [b for b in module.buffers() if b is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


def quantized_kernel_of(module: nn.Module) -> str | None:
    """The matmul kernel a weight-only quantized layer runs ("reference": dequantize + F.linear), or None
    for any other module."""
    return module.kernel_name() if isinstance(module, _WeightOnlyLinear) else None

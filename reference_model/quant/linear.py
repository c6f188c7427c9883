"""Weight-only quantized linear layers (gpt-fast style): they hold ONLY the packed integer weight, its
scales (and zeros), and optionally a bias and an AWQ input scale.

Kernels: ``torch.ops.aten._weight_int8pack_mm`` (CPU and CUDA) for int8, and the tinygemm int4 kernels
(``_weight_int4pack_mm_for_cpu`` on CPU; ``_weight_int4pack_mm`` on CUDA, bf16 only). Each kernel is probed
once per (device type, dtype) against the plain formula; where it is missing or fails the probe the layer
uses the readable fallback (dequantize, then ``F.linear``), which computes the same thing.

The int4 kernels need the weight in their own opaque layout, fixed when the layer is built: ``layout`` says
which ("aten-cpu", "aten-cuda" or "reference" = :func:`~.packing.pack_int4` nibbles). A layer built for one
device type cannot run its aten layout on another; it says so in one line.

Activation dtype: a layer runs its kernel in the activation dtype that kernel is fast in, casting its input
in and its output back (the model's dtype stays what it is). On CPU both packed kernels are ~10-40x faster
with bf16 activations than with fp32 (measured on the 7B's qkv shape, batch 1, one thread:
``_weight_int4pack_mm_for_cpu`` 80.6 ms fp32 vs 1.8 ms bf16, ``_weight_int8pack_mm`` 40.2 vs 3.3 ms;
fp32 ``F.linear`` 11.3 ms), so ``activation_dtype="auto"`` picks bf16 there; CUDA's tinygemm takes bf16 only.
``benchmarks/bench_quant.py --only kernels`` shows every kernel with both activation dtypes side by side,
beside the dynamic int8 (W8A8) layer of :mod:`.dynamic` and which one each flag value picks.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .packing import INT4_OFFSET, QuantizedWeight, dequantize_int8, pack_int4, unpack_int4

INT4_INNER_K_TILES = 8  # tinygemm tiling; 2, 4 or 8 are valid
ACTIVATION_DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def int8_kernel_takes(device_type: str, dtype: torch.dtype, in_features: int) -> bool:
    """Whether ``_weight_int8pack_mm`` can run this layer: probed for the device and dtype, and on CPU
    with 16-bit activations only for ``in_features % 16 == 0`` (torch 2.13's vectorised path returns
    garbage or crashes for K = 72, measured; fp32 takes any K)."""
    if device_type == "cpu" and dtype != torch.float32 and in_features % 16:
        return False
    return int8_kernel_ok(device_type, dtype)


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


def fast_activation_dtype(
    bits: int, device_type: str, model_dtype: torch.dtype, in_features: int
) -> torch.dtype:
    """The activation dtype the ``bits``-wide weight-only kernel is fast in on this device: bf16 on CPU
    (both packed kernels; fp32 activations take their slow path) and for CUDA's bf16-only int4 kernel;
    the model's own dtype for CUDA int8. Falls back to ``model_dtype`` where the kernel cannot take bf16
    (failed probe, or a shape it does not handle)."""
    if device_type == "cuda" and bits == 8:
        return model_dtype  # not measured against bf16 on CUDA: keep what scripts/gpu_check.py verified
    if device_type in ("cpu", "cuda"):
        ok = (
            int8_kernel_takes(device_type, torch.bfloat16, in_features)
            if bits == 8
            else _int4_kernel_ok(device_type, torch.bfloat16)
        )
        if ok:
            return torch.bfloat16
    return model_dtype


def resolve_activation_dtype(
    activation_dtype: torch.dtype | str,
    bits: int,
    device_type: str,
    model_dtype: torch.dtype,
    in_features: int,
) -> torch.dtype:
    """``"auto"`` -> :func:`fast_activation_dtype`; a name of :data:`ACTIVATION_DTYPES` or a dtype as is."""
    if isinstance(activation_dtype, torch.dtype):
        return activation_dtype
    if activation_dtype not in ACTIVATION_DTYPES:
        raise ValueError(
            f"activation dtype must be one of {', '.join(ACTIVATION_DTYPES)}, got {activation_dtype!r}"
        )
    chosen = ACTIVATION_DTYPES[activation_dtype]
    return fast_activation_dtype(bits, device_type, model_dtype, in_features) if chosen is None else chosen


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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

    def _finish(self, y: torch.Tensor, lead: torch.Size, out_dtype: torch.dtype) -> torch.Tensor:
        y = y.to(out_dtype)  # back to the model's dtype: the kernel's activation dtype stays inside
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel_label()}"
        )

    def kernel_label(self) -> str:
        """The kernel and the activation dtype it runs in, as reports record it."""
        return f"{self.kernel_name()} ({dtype_name(self.activation_dtype)} activations)"

    def kernel_name(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


class Int8WeightOnlyLinear(_WeightOnlyLinear):
    """``y = (x / s_in) @ (q * scale).T + b`` with int8 ``q`` [N, K] and one scale per output channel."""

    def __init__(
        self,
        qw: QuantizedWeight,
        bias: torch.Tensor | None = None,
        *,
        dtype=torch.float32,
        device=None,
        activation_dtype: torch.dtype | str = "auto",
    ):
        super().__init__()
        if qw.bits != 8 or qw.scales.shape[1] != 1:
            raise ValueError("Int8WeightOnlyLinear takes per-channel int8 codes")
        device = qw.q.device if device is None else torch.device(device)
        self.out_features, self.in_features = qw.q.shape
        self.activation_dtype = resolve_activation_dtype(
            activation_dtype, 8, device.type, dtype, self.in_features
        )
        self.force_reference = False  # tests and benchmarks flip this to time/verify the fallback
        self.register_buffer("weight", qw.q.to(device, torch.int8).contiguous())
        self.register_buffer("scales", qw.scales[:, 0].to(device, self.activation_dtype).contiguous())
        self._register_common(qw, bias, dtype, device)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, qw: QuantizedWeight, activation_dtype: torch.dtype | str = "auto"
    ) -> Int8WeightOnlyLinear:
        w = linear.weight
        return cls(qw, linear.bias, dtype=w.dtype, device=w.device, activation_dtype=activation_dtype)

    def _uses_kernel(self, device_type: str) -> bool:
        return not self.force_reference and int8_kernel_takes(
            device_type, self.activation_dtype, self.in_features
        )

    def kernel_name(self) -> str:
        return "aten._weight_int8pack_mm" if self._uses_kernel(self.weight.device.type) else "reference"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d, lead = self._prepare_input(x)
        xa = x2d.to(self.activation_dtype)
        if self._uses_kernel(x.device.type):
            y = torch.ops.aten._weight_int8pack_mm(xa.contiguous(), self.weight, self.scales)
        else:
            y = F.linear(xa, self.weight.to(xa.dtype)) * self.scales
        return self._finish(y, lead, x.dtype)

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
        activation_dtype: torch.dtype | str = "auto",
    ):
        super().__init__()
        if qw.bits != 4:
            raise ValueError("Int4WeightOnlyLinear takes int4 codes")
        device = qw.q.device if device is None else torch.device(device)
        self.out_features, self.in_features = qw.q.shape
        self.group_size = qw.group_size
        act = self.activation_dtype = resolve_activation_dtype(
            activation_dtype, 4, device.type, dtype, self.in_features
        )
        if layout == "auto":
            layout = int4_layout_for(device.type, act, self.out_features, self.in_features, self.group_size)
        if layout not in ("aten-cpu", "aten-cuda", "reference"):
            raise ValueError(f"unknown int4 layout {layout!r}")
        self.layout = layout
        assert qw.zeros is not None
        if layout == "reference":
            weight = pack_int4(qw.q.cpu()).to(device)
            sz = torch.stack([qw.scales, qw.zeros], dim=-1).transpose(0, 1).to(device, act).contiguous()
        else:
            weight, sz = _to_aten_int4(qw.q.cpu(), qw.scales.cpu(), qw.zeros.cpu(), device.type, act)
        self.register_buffer("weight", weight)
        self.register_buffer("scales_and_zeros", sz)  # [K // group_size, N, 2], the tinygemm convention
        self._register_common(qw, bias, dtype, device)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        qw: QuantizedWeight,
        layout: str = "auto",
        activation_dtype: torch.dtype | str = "auto",
    ) -> Int4WeightOnlyLinear:
        w = linear.weight
        return cls(
            qw, linear.bias, dtype=w.dtype, device=w.device, layout=layout, activation_dtype=activation_dtype
        )

    def kernel_name(self) -> str:
        return {"aten-cpu": "aten._weight_int4pack_mm_for_cpu", "aten-cuda": "aten._weight_int4pack_mm"}.get(
            self.layout, "reference"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d, lead = self._prepare_input(x)
        x2d = x2d.to(self.activation_dtype)
        if self.layout == "reference":
            y = F.linear(x2d, self._reference_weight(x2d.dtype))
        else:
            want = self.layout.removeprefix("aten-")
            if x.device.type != want:
                raise RuntimeError(
                    f"int4 layer packed for {want}, called on {x.device.type}; quantize on {want}"
                )
            y = _int4_aten_mm(x2d.contiguous(), self.weight, self.group_size, self.scales_and_zeros, want)
        return self._finish(y, lead, x.dtype)

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
    """Bytes of every parameter and buffer of ``module`` (what the weights cost in memory), and of the
    packs a kernel library holds outside them (``packed_bytes()`` of a layer: fbgemm's dynamic int8)."""
    tensors = list(module.parameters()) + [b for b in module.buffers() if b is not None]
    packed = sum(m.packed_bytes() for m in module.modules() if hasattr(m, "packed_bytes"))
    return sum(t.numel() * t.element_size() for t in tensors) + packed


def quantized_kernel_of(module: nn.Module) -> str | None:
    """The matmul kernel a weight-only quantized layer runs ("reference": dequantize + F.linear) and its
    activation dtype, e.g. ``"aten._weight_int8pack_mm (bfloat16 activations)"``; None for any other
    module."""
    return module.kernel_label() if isinstance(module, _WeightOnlyLinear) else None

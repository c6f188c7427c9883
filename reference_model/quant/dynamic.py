"""Dynamic int8 (W8A8) linear: the int8 weight codes of RTN / GPTQ / AWQ run through fbgemm's
``quantized::linear_dynamic`` (torch.ao.nn.quantized.dynamic.Linear), which quantizes the activations to
int8 at run time and multiplies in integers.

It changes the arithmetic beyond weight-only int8: the activations are rounded to 7 bits (``reduce_range``,
torch.ao's default, which keeps fbgemm's 16-bit accumulation from saturating on CPUs without VNNI), one
scale per row. fbgemm takes one scale for a whole input tensor, which would make each conversation's output
depend on the other conversations of a batch; the layer quantizes every row on its own instead (one call
per row), so a stream's tokens do not depend on its neighbours. CPU only: fbgemm has no CUDA kernel.

torch 2.13 warns that quantized tensors (what fbgemm's packed weight is built from) are deprecated; the
warning is silenced where the layer is built, since nothing else in the model uses them.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

from .linear import _WeightOnlyLinear
from .packing import QuantizedWeight

DYNAMIC_KERNEL = "quantized.linear_dynamic (fbgemm W8A8)"


@functools.cache
def dynamic_int8_ok() -> bool:
    """Whether this torch build runs the dynamic int8 linear on CPU, matching the formula (probed once)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-127, 128, (32, 64), generator=g, dtype=torch.int8)
    qw = QuantizedWeight(8, None, q, torch.rand(32, 1, generator=g) * 0.01 + 0.005, None)
    x = torch.randn(2, 64, generator=g)
    try:
        y = Int8DynamicLinear(qw)(x)
    except (RuntimeError, NotImplementedError, AttributeError):
        return False
    ref = x @ qw.dequantize().T
    return bool(torch.allclose(y, ref, rtol=0.05, atol=0.05 * ref.abs().max().item()))


class Int8DynamicLinear(_WeightOnlyLinear):
    """``y = quant(x / s_in) @ (q * scale).T + b``: int8 codes [N, K] with one scale per output channel,
    activations quantized per row at run time."""

    def __init__(
        self, qw: QuantizedWeight, bias: torch.Tensor | None = None, *, dtype=torch.float32, device=None
    ):
        super().__init__()
        if qw.bits != 8 or qw.scales.shape[1] != 1:
            raise ValueError("Int8DynamicLinear takes per-channel int8 codes")
        device = qw.q.device if device is None else torch.device(device)
        if device.type != "cpu":
            raise ValueError(f"dynamic int8 runs fbgemm's CPU kernel; the layer is on {device.type}")
        self.out_features, self.in_features = qw.q.shape
        self.activation_dtype = torch.float32  # what fbgemm takes in (it quantizes it to int8 itself)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.inner = torch.ao.nn.quantized.dynamic.Linear(
                self.in_features, self.out_features, dtype=torch.qint8
            )
            codes = torch._make_per_channel_quantized_tensor(
                qw.q.cpu().to(torch.int8),
                qw.scales[:, 0].cpu().double(),
                torch.zeros(self.out_features, dtype=torch.int64),
                0,
            )
            self.inner.set_weight_bias(codes, None)
        self._register_common(qw, bias, dtype, device)

    @classmethod
    def from_linear(cls, linear: nn.Linear, qw: QuantizedWeight) -> Int8DynamicLinear:
        w = linear.weight
        return cls(qw, linear.bias, dtype=w.dtype, device=w.device)

    def kernel_name(self) -> str:
        return DYNAMIC_KERNEL

    def kernel_label(self) -> str:
        return f"{DYNAMIC_KERNEL} (int8 activations, quantized per row)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d, lead = self._prepare_input(x)
        xa = x2d.to(torch.float32)
        packed = self.inner._packed_params._packed_params
        op = torch.ops.quantized.linear_dynamic  # what the torch.ao module calls, without its wrapper
        if xa.shape[0] == 1:
            y = op(xa, packed, True)  # reduce_range=True, as torch.ao runs it
        else:  # one activation scale per row: a stream's result never depends on the rest of the batch
            y = torch.cat([op(row, packed, True) for row in xa.split(1)])
        return self._finish(y, lead, x.dtype)

    def codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The int8 codes [N, K] and per-channel scales [N] that fbgemm holds (read back from its pack)."""
        w, _ = self.inner._packed_params._weight_bias()
        return w.int_repr(), w.q_per_channel_scales().float()

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight applied to the raw input (AWQ input scale included); activations aside."""
        q, scales = self.codes()
        w = q.float() * scales[:, None]
        return w if self.input_scale_inv is None else w * self.input_scale_inv.float()

    def packed_bytes(self) -> int:
        """Bytes of fbgemm's pack, which is no parameter or buffer: the codes, and a float64 scale and an
        int64 zero point per output channel."""
        return self.out_features * self.in_features + 16 * self.out_features

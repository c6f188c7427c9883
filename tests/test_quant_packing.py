"""Packed int8/int4 storage and the quantized linear layers: exact packing, matmul = dequantized matmul,
and the bytes the layers really hold."""

from __future__ import annotations

import pytest
import torch

from reference_model.quant.linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear, tensor_bytes
from reference_model.quant.packing import pack_int4, quantize_weight, unpack_int4


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _linear(n: int, k: int, bias: bool = False, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n, bias=bias)


def test_int4_pack_unpack_round_trip_is_exact() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (37, 66), generator=g, dtype=torch.uint8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (37, 33)
    assert torch.equal(unpack_int4(packed), q)
    assert torch.equal(
        pack_int4(torch.full((1, 2), 15, dtype=torch.uint8)), torch.tensor([[255]], dtype=torch.uint8)
    )


def test_pack_rejects_odd_columns() -> None:
    with pytest.raises(ValueError, match="even number of columns"):
        pack_int4(torch.zeros(2, 3, dtype=torch.uint8))


@pytest.mark.parametrize("bits,group", [(8, None), (4, 32), (4, 64)])
def test_rounding_error_is_at_most_half_a_step(bits: int, group: int | None) -> None:
    w = _linear(48, 128).weight.detach()
    qw = quantize_weight(w, bits, group)
    step = qw.scales.repeat_interleave(qw.group_size, dim=1)
    assert ((qw.dequantize() - w).abs() <= step / 2 + 1e-6).all()


@pytest.mark.parametrize("force_reference", [False, True])
def test_int8_linear_equals_dequantized_matmul(force_reference: bool) -> None:
    lin = _linear(40, 72, bias=True)
    qw = quantize_weight(lin.weight.detach(), 8)
    layer = Int8WeightOnlyLinear.from_linear(lin, qw)
    layer.force_reference = force_reference
    x = torch.randn(2, 5, 72)
    expected = torch.nn.functional.linear(x, qw.dequantize(), lin.bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.dequantized_weight(), qw.dequantize())


@pytest.mark.parametrize("layout", ["auto", "reference"])
def test_int4_linear_equals_dequantized_matmul(layout: str) -> None:
    lin = _linear(64, 256, bias=True)
    qw = quantize_weight(lin.weight.detach(), 4, 64)
    layer = Int4WeightOnlyLinear.from_linear(lin, qw, layout=layout)
    if layout == "auto":
        assert layer.layout == "aten-cpu"  # torch's CPU int4 kernel is present in this build
    x = torch.randn(3, 256)
    expected = torch.nn.functional.linear(x, qw.dequantize(), lin.bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-4)
    # Read back through the kernel itself: checks the opaque aten layout end to end.
    torch.testing.assert_close(layer.dequantized_weight(), qw.dequantize(), rtol=0, atol=1e-5)


def test_int4_shape_the_kernel_cannot_take_uses_the_reference_layout() -> None:
    lin = _linear(24, 64)  # 24 outputs: the CPU kernel wants a multiple of 16
    qw = quantize_weight(lin.weight.detach(), 4, 32)
    layer = Int4WeightOnlyLinear.from_linear(lin, qw)
    assert layer.layout == "reference"
    x = torch.randn(2, 64)
    torch.testing.assert_close(layer(x), x @ qw.dequantize().T, rtol=1e-5, atol=1e-5)


def test_stored_bytes_are_a_quarter_and_an_eighth_plus_scales() -> None:
    n, k, group = 256, 512, 128
    lin = _linear(n, k)
    fp32 = tensor_bytes(lin)
    int8 = Int8WeightOnlyLinear.from_linear(lin, quantize_weight(lin.weight.detach(), 8))
    int4 = Int4WeightOnlyLinear.from_linear(lin, quantize_weight(lin.weight.detach(), 4, group))
    assert tensor_bytes(int8) == n * k + 4 * n  # int8 codes + one fp32 scale per row
    assert tensor_bytes(int4) == n * k // 2 + (k // group) * n * 2 * 4  # nibbles + fp32 (scale, zero)/group
    assert tensor_bytes(int8) / fp32 < 0.26
    assert tensor_bytes(int4) / fp32 < 0.125 + 2 / group + 1e-9
    for layer in (int8, int4):  # nothing float of the weight's size is kept around
        assert all(not t.is_floating_point() or t.numel() < n * k // 8 for t in layer.buffers())

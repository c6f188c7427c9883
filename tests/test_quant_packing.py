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


# bf16 activations: the input and each product are rounded to bf16 (8 mantissa bits), so the layer agrees
# with the fp32 dequantized matmul to a few bf16 steps of the output's scale.
BF16_RTOL, BF16_ATOL = 2e-2, 2e-2


def _tolerances(layer) -> dict[str, float]:
    if layer.activation_dtype == torch.float32:
        return {"rtol": 1e-5, "atol": 1e-4}
    return {"rtol": BF16_RTOL, "atol": BF16_ATOL}


@pytest.mark.parametrize("k", [72, 128])  # 72: the CPU bf16 int8 kernel needs K % 16 == 0
@pytest.mark.parametrize("activation_dtype", ["auto", "fp32", "bf16"])
@pytest.mark.parametrize("force_reference", [False, True])
def test_int8_linear_equals_dequantized_matmul(force_reference: bool, activation_dtype: str, k: int) -> None:
    lin = _linear(40, k, bias=True)
    qw = quantize_weight(lin.weight.detach(), 8)
    layer = Int8WeightOnlyLinear.from_linear(lin, qw, activation_dtype=activation_dtype)
    layer.force_reference = force_reference
    if k == 72 and activation_dtype != "fp32" and not force_reference:
        want = torch.float32 if activation_dtype == "auto" else torch.bfloat16
        assert layer.activation_dtype == want
        assert layer.kernel_name() == ("reference" if want == torch.bfloat16 else "aten._weight_int8pack_mm")
    x = torch.randn(2, 5, k)
    expected = torch.nn.functional.linear(x, qw.dequantize(), lin.bias)
    y = layer(x)
    assert y.dtype == torch.float32  # the model's dtype, whatever the kernel ran in
    torch.testing.assert_close(y, expected, **_tolerances(layer))
    torch.testing.assert_close(layer.dequantized_weight(), qw.dequantize(), **_tolerances(layer))


@pytest.mark.parametrize("activation_dtype", ["auto", "fp32"])
@pytest.mark.parametrize("layout", ["auto", "reference"])
def test_int4_linear_equals_dequantized_matmul(layout: str, activation_dtype: str) -> None:
    lin = _linear(64, 256, bias=True)
    qw = quantize_weight(lin.weight.detach(), 4, 64)
    layer = Int4WeightOnlyLinear.from_linear(lin, qw, layout=layout, activation_dtype=activation_dtype)
    if layout == "auto":
        assert layer.layout == "aten-cpu"  # torch's CPU int4 kernel is present in this build
    x = torch.randn(3, 256)
    expected = torch.nn.functional.linear(x, qw.dequantize(), lin.bias)
    y = layer(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, expected, **_tolerances(layer))
    # Read back through the kernel itself: checks the opaque aten layout end to end (bf16 scales and
    # zeros round the weight to bf16 too).
    tol = (
        {"rtol": 0, "atol": 1e-5} if layer.activation_dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-3}
    )
    torch.testing.assert_close(layer.dequantized_weight(), qw.dequantize(), **tol)


@pytest.mark.parametrize("bits", [8, 4])
def test_cpu_layers_run_their_kernel_in_bf16_and_say_so(bits: int) -> None:
    """On CPU the packed kernels' fast path takes bf16 activations: "auto" picks it, the model stays fp32,
    and the label that reports record names kernel and activation dtype."""
    from reference_model.quant.linear import quantized_kernel_of

    lin = _linear(64, 256)
    if bits == 8:
        layer = Int8WeightOnlyLinear.from_linear(lin, quantize_weight(lin.weight.detach(), 8))
        kernel = "aten._weight_int8pack_mm"
    else:
        layer = Int4WeightOnlyLinear.from_linear(lin, quantize_weight(lin.weight.detach(), 4, 64))
        kernel = "aten._weight_int4pack_mm_for_cpu"
    assert layer.activation_dtype == torch.bfloat16
    assert quantized_kernel_of(layer) == f"{kernel} (bfloat16 activations)"
    fp32 = type(layer).from_linear(
        lin, quantize_weight(lin.weight.detach(), bits, None if bits == 8 else 64), activation_dtype="fp32"
    )
    assert quantized_kernel_of(fp32) == f"{kernel} (float32 activations)"
    assert quantized_kernel_of(lin) is None


def test_unknown_activation_dtype_is_refused() -> None:
    lin = _linear(16, 64)
    with pytest.raises(ValueError, match="activation dtype must be one of"):
        Int8WeightOnlyLinear.from_linear(
            lin, quantize_weight(lin.weight.detach(), 8), activation_dtype="int3"
        )


def test_int4_shape_the_kernel_cannot_take_uses_the_reference_layout() -> None:
    lin = _linear(24, 64)  # 24 outputs: the CPU kernel wants a multiple of 16
    qw = quantize_weight(lin.weight.detach(), 4, 32)
    layer = Int4WeightOnlyLinear.from_linear(lin, qw)
    assert layer.layout == "reference"
    assert layer.kernel_label() == "reference (bfloat16 activations)"
    x = torch.randn(2, 64)
    torch.testing.assert_close(layer(x), x @ qw.dequantize().T, rtol=BF16_RTOL, atol=BF16_ATOL)


def test_stored_bytes_are_a_quarter_and_an_eighth_plus_scales() -> None:
    n, k, group = 256, 512, 128
    lin = _linear(n, k)
    fp32 = tensor_bytes(lin)
    int8 = Int8WeightOnlyLinear.from_linear(lin, quantize_weight(lin.weight.detach(), 8))
    int4 = Int4WeightOnlyLinear.from_linear(lin, quantize_weight(lin.weight.detach(), 4, group))
    e = int8.scales.element_size()  # scales are kept in the kernel's activation dtype (bf16 on CPU)
    assert tensor_bytes(int8) == n * k + e * n  # int8 codes + one scale per row
    assert tensor_bytes(int4) == n * k // 2 + (k // group) * n * 2 * e  # nibbles + (scale, zero) per group
    assert tensor_bytes(int8) / fp32 < 0.26
    assert tensor_bytes(int4) / fp32 < 0.125 + 2 / group + 1e-9
    for layer in (int8, int4):  # nothing float of the weight's size is kept around
        assert all(not t.is_floating_point() or t.numel() < n * k // 8 for t in layer.buffers())

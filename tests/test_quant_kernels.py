"""The kernels behind int8/int4: the dynamic int8 (W8A8) layer computes the formula, keeps the codes it was
given, never lets one stream's activations change another's output, counts its bytes; the flag's kernel
choice reaches the layers and the report; `auto` picks the documented activation dtype. Exactness only."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reference_model.enhancements import FlagError
from reference_model.quant.dynamic import DYNAMIC_KERNEL, Int8DynamicLinear, dynamic_int8_ok
from reference_model.quant.linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear, tensor_bytes
from reference_model.quant.rtn import rtn_quantize
from reference_model.quant.swap import make_quantized, quantize_model

pytestmark = pytest.mark.skipif(not dynamic_int8_ok(), reason="no dynamic int8 linear in this torch build")


def _linear(k: int = 128, n: int = 48, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(k, n, bias=bias)


def test_dynamic_int8_is_the_formula_on_the_codes_it_was_given() -> None:
    lin = _linear()
    qw = rtn_quantize(lin.weight.detach(), 8)
    layer = Int8DynamicLinear.from_linear(lin, qw)
    q, scales = layer.codes()
    assert torch.equal(q, qw.q.to(torch.int8)) and torch.allclose(scales, qw.scales[:, 0].float())
    x = torch.randn(5, 128, generator=torch.Generator().manual_seed(1))
    want = x @ qw.dequantize().T + lin.bias.detach()
    got = layer(x)
    # activations rounded to 7 bits per row: a few percent off the weight-only result, not more
    rel = float((got - want).norm() / want.norm())
    assert 1e-5 < rel < 0.03, rel


def test_dynamic_int8_rows_do_not_depend_on_the_batch() -> None:
    """fbgemm quantizes a whole tensor with one scale; the layer quantizes each row on its own, so a
    stream's output is bit-identical alone and beside a loud neighbour."""
    layer = Int8DynamicLinear.from_linear(_linear(), rtn_quantize(_linear().weight.detach(), 8))
    g = torch.Generator().manual_seed(2)
    quiet, loud = torch.randn(1, 128, generator=g) * 0.1, torch.randn(1, 128, generator=g) * 50
    alone = layer(quiet)
    together = layer(torch.cat([quiet, loud]))
    assert torch.equal(together[:1], alone)
    seq = layer(torch.cat([quiet, loud]).reshape(1, 2, 128))  # [B, T, K] rows too
    assert torch.equal(seq[0, :1], alone)


def test_dynamic_int8_bytes_awq_scale_and_conv() -> None:
    lin = _linear(bias=False)
    qw = rtn_quantize(lin.weight.detach(), 8)
    layer = Int8DynamicLinear.from_linear(lin, qw)
    assert tensor_bytes(layer) == 48 * 128 + 16 * 48  # fbgemm's pack: codes + float64 scale, int64 zero
    assert tensor_bytes(layer) == layer.packed_bytes()
    # an AWQ input scale divides the input before the kernel
    qw.input_scale = torch.rand(128, generator=torch.Generator().manual_seed(3)) + 0.5
    scaled = Int8DynamicLinear.from_linear(lin, qw)
    x = torch.randn(1, 128)
    torch.testing.assert_close(scaled(x), layer(x / qw.input_scale))
    # a kernel-1 Conv1d goes through the same layer
    conv = nn.Conv1d(128, 48, 1, bias=False)
    new = make_quantized(conv, rtn_quantize(conv.weight.detach()[:, :, 0], 8), "dynamic")
    assert isinstance(new.linear, Int8DynamicLinear) and new(torch.randn(1, 128, 3)).shape == (1, 48, 3)


def test_kernel_choice_reaches_every_layer() -> None:
    """auto: the packed kernels in bf16 on CPU where they take the shape (int8: in_features % 16 == 0),
    fp32 / bf16 forced, dynamic: the W8A8 layer; a deepcopy keeps the kernel."""
    stack = nn.Sequential(nn.Linear(128, 64), nn.Linear(64, 72), nn.Linear(72, 32))
    labels = {}
    for kernel in ("auto", "fp32", "bf16", "dynamic"):
        m = copy.deepcopy(stack)
        summary = quantize_model(m, 8, "rtn", kernel=kernel)
        assert summary.kernel == kernel and summary.to_dict()["kernel"] == kernel
        labels[kernel] = list(summary.quantized.values())
        y = copy.deepcopy(m)(torch.randn(2, 128))
        assert y.shape == (2, 32) and torch.isfinite(y).all()
    assert labels["auto"] == [
        "aten._weight_int8pack_mm (bfloat16 activations)",
        "aten._weight_int8pack_mm (bfloat16 activations)",
        "aten._weight_int8pack_mm (float32 activations)",  # K = 72: the bf16 path is wrong there
    ]
    assert set(labels["fp32"]) == {"aten._weight_int8pack_mm (float32 activations)"}
    assert labels["bf16"][2] == "reference (bfloat16 activations)"  # forced, so the readable fallback
    assert set(labels["dynamic"]) == {f"{DYNAMIC_KERNEL} (int8 activations, quantized per row)"}
    int4 = quantize_model(copy.deepcopy(stack[:1]), 4, "rtn", kernel="fp32")
    assert list(int4.quantized.values()) == ["aten._weight_int4pack_mm_for_cpu (float32 activations)"]
    assert isinstance(copy.deepcopy(stack[:1])[0], nn.Linear)
    with pytest.raises(ValueError, match="int8 only"):
        quantize_model(copy.deepcopy(stack), 4, "rtn", kernel="dynamic")


def test_the_flag_records_the_dynamic_kernel_in_the_report() -> None:
    from reference_model import DuplexSpec, build_duplex
    from reference_model.report import QuantReport

    torch.set_num_threads(1)
    duplex = build_duplex(DuplexSpec(flags="int8=dynamic", seed=0, temp=0, temp_text=0))
    report = duplex.report()
    summary = report.get(QuantReport).summary
    assert summary.kernel == "dynamic" and summary.method == "rtn"
    label = f"{DYNAMIC_KERNEL} (int8 activations, quantized per row)"
    assert report.kernels()["linear"][label] == len(summary.quantized) > 0
    pcm = torch.randn(1, 1, duplex.frame_size, generator=torch.Generator().manual_seed(0)) * 0.1
    for _ in range(duplex.max_delay + 2):
        text, out = duplex.step(pcm)
    assert text is not None and torch.isfinite(out).all()


def test_dynamic_kernel_refuses_cuda_in_one_line() -> None:
    from reference_model.enhancements.quantize import QuantChoice, check_device

    with pytest.raises(FlagError, match="CPU only") as err:
        check_device(QuantChoice(8, "rtn", "dynamic"), torch.device("cuda"), torch.float32)
    assert "\n" not in str(err.value)
    check_device(QuantChoice(8, "rtn", "dynamic"), torch.device("cpu"), torch.float32)


def test_weight_only_layers_keep_their_labels() -> None:
    lin = _linear()
    assert Int8WeightOnlyLinear.from_linear(lin, rtn_quantize(lin.weight, 8), "fp32").kernel_label() == (
        "aten._weight_int8pack_mm (float32 activations)"
    )
    q4 = rtn_quantize(lin.weight, 4, 128)
    assert Int4WeightOnlyLinear.from_linear(lin, q4).kernel_label() == (
        "aten._weight_int4pack_mm_for_cpu (bfloat16 activations)"
    )

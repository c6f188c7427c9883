"""GPTQ and AWQ must beat round-to-nearest on the layer's output error, on held-out data drawn like the
calibration data (correlated activations with a few outlier channels, as in real transformers)."""

from __future__ import annotations

import pytest
import torch

from reference_model.quant.awq import awq_quantize
from reference_model.quant.gptq import gptq_quantize
from reference_model.quant.rtn import rtn_quantize


def _problem(seed: int = 0, k: int = 256, n: int = 96, rows: int = 768):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5
    channel = torch.ones(k)
    channel[torch.randperm(k, generator=g)[:8]] = 20.0  # outlier input channels

    def activations(m: int) -> torch.Tensor:
        return (torch.randn(m, k, generator=g) @ mix + 0.3 * torch.randn(m, k, generator=g)) * channel

    w = torch.randn(n, k, generator=g) * 0.05
    return w, activations(rows), activations(rows)


def _output_error(w, qw, x) -> float:
    return float(((x @ (w - qw.effective_weight()).T) ** 2).mean())


@pytest.mark.parametrize("bits,group", [(8, None), (4, 64)])
def test_gptq_and_awq_beat_rtn_on_held_out_data(bits: int, group: int | None) -> None:
    torch.set_num_threads(1)
    w, calib, held_out = _problem()
    rtn = _output_error(w, rtn_quantize(w, bits, group), held_out)
    gptq = _output_error(w, gptq_quantize(w, calib.T @ calib, bits, group), held_out)
    awq = _output_error(w, awq_quantize(w, calib, bits, group), held_out)
    assert gptq < 0.9 * rtn, (gptq, rtn)
    assert awq < 0.9 * rtn, (awq, rtn)


def test_gptq_codes_are_valid_and_match_their_scales() -> None:
    w, calib, _ = _problem(k=128, n=32)
    qw = gptq_quantize(w, calib.T @ calib, 4, 32)
    assert qw.q.dtype == torch.uint8 and int(qw.q.max()) <= 15
    assert qw.scales.shape == (32, 4) and qw.zeros is not None
    # With an identity Hessian there is nothing to compensate: GPTQ is round to nearest.
    plain = gptq_quantize(w, torch.eye(128), 4, 32, damp=0.0)
    assert torch.equal(plain.q, rtn_quantize(w, 4, 32).q)


def test_gptq_zeroes_inputs_that_are_never_active() -> None:
    w, calib, _ = _problem(k=64, n=16)
    calib[:, 5] = 0.0
    qw = gptq_quantize(w, calib.T @ calib, 8)
    assert qw.dequantize()[:, 5].abs().max() == 0


def test_awq_input_scale_keeps_the_full_precision_product() -> None:
    w, calib, _ = _problem(k=128, n=32)
    qw = awq_quantize(w, calib, 8)
    assert qw.input_scale is not None and qw.input_scale.shape == (128,)
    # W_q / s applied to x approximates W x (the scale is undone at run time).
    rel = (calib @ (qw.effective_weight() - w).T).norm() / (calib @ w.T).norm()
    assert rel < 0.02

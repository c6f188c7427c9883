"""Quantized LM and codec through the flags: they build, stream, keep greedy tokens mostly identical
(int8), and bad flag values are refused in one line."""

from __future__ import annotations

import copy

import pytest
import torch

from reference_model.enhancements import FlagError, parse_flags


@pytest.fixture(scope="module")
def tiny_lm():
    torch.set_num_threads(1)
    from reference_model.lm import load_lm

    torch.manual_seed(0)
    return load_lm("tiny")


@pytest.mark.parametrize(
    "flags,needle",
    [
        ("int8=foo", "bad value for flag 'int8'"),
        ("int4=gptq4", "bad value for flag 'int4'"),
        ("codec-int8=x", "bad value for flag 'codec-int8'"),
        ("int4=dynamic", "int8 only"),
        ("int8=rtn:fast", "kernel must be one of"),
        ("int8=rtn:bf16:x", "METHOD[:KERNEL]"),
        ("kv-compress=int9", "bad value for flag 'kv-compress'"),
        ("kv-compress=int8:0", "bad value for flag 'kv-compress'"),
        ("int8,int4", "cannot combine"),
        ("codec-int8,codec-int4", "cannot combine"),
    ],
)
def test_bad_quant_flags_are_one_line(flags: str, needle: str) -> None:
    with pytest.raises(FlagError) as err:
        parse_flags(flags)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_quant_flag_values_parse() -> None:
    from reference_model.enhancements.quantize import QuantChoice

    parsed = {f.name: f.value for f in parse_flags("int4=gptq,codec-int8=awq,kv-compress=int8:8")}
    assert parsed == {"int4": QuantChoice(4, "gptq"), "codec-int8": QuantChoice(8, "awq"),
                      "kv-compress": ("int8", 8)}  # fmt: skip
    assert parse_flags("int8")[0].value == QuantChoice(8, "rtn", "auto")
    assert parse_flags("int8=dynamic")[0].value == QuantChoice(8, "rtn", "dynamic")
    assert parse_flags("int8=gptq:dynamic")[0].value == QuantChoice(8, "gptq", "dynamic")
    assert parse_flags("int4=awq:fp32")[0].value == QuantChoice(4, "awq", "fp32")


def test_int8_lm_keeps_greedy_tokens_and_holds_a_quarter_of_the_bytes(tiny_lm) -> None:
    from reference_model.quant.evaluate import greedy_agreement
    from reference_model.quant.linear import Int8WeightOnlyLinear
    from reference_model.quant.models import quantize_lm

    lm = copy.deepcopy(tiny_lm)
    summary = quantize_lm(lm, 8, "rtn")
    assert isinstance(lm.transformer.layers[0].gating.linear_in, Int8WeightOnlyLinear)
    assert isinstance(lm.depformer.layers[1].self_attn.in_projs[3], Int8WeightOnlyLinear)
    assert isinstance(lm.text_linear, torch.nn.Linear) and isinstance(lm.linears[0], torch.nn.Linear)
    assert not summary.skipped and len(summary.quantized) == 88
    quantized_fp32 = sum(m.weight.numel() * 4 for n, m in tiny_lm.named_modules() if n in summary.quantized)
    saved = summary.bytes_before - summary.bytes_after
    assert saved > 0.74 * quantized_fp32  # int8 codes (+ one scale per row) instead of fp32
    agree = greedy_agreement(tiny_lm, lm, steps=12)
    assert agree.text >= 0.8 and agree.audio >= 0.8, agree


def test_int4_lm_builds_and_streams_through_the_flag() -> None:
    from reference_model import DuplexSpec, build_duplex
    from reference_model.quant.linear import Int4WeightOnlyLinear

    duplex = build_duplex(DuplexSpec(flags="int4", seed=0))
    assert isinstance(duplex.lm.transformer.layers[0].self_attn.out_projs[0], Int4WeightOnlyLinear)
    from reference_model.report import QuantReport

    report = duplex.report()
    assert report.get(QuantReport).summary.bits == 4
    # Every record names the kernel and the activation dtype it ran in (bf16 on CPU); the model stays fp32.
    label = "aten._weight_int4pack_mm_for_cpu (bfloat16 activations)"
    assert report.kernels()["linear"][label] == len(report.get(QuantReport).summary.quantized)
    assert set(report.get(QuantReport).summary.quantized.values()) == {label}
    assert report.dtype == "float32"
    pcm = torch.randn(1, 1, duplex.frame_size) * 0.1
    for _ in range(duplex.max_delay + 2):
        text, out = duplex.step(pcm)
    assert text is not None and torch.isfinite(out).all()


def test_int4_lm_logits_stay_near_full_precision() -> None:
    """The first step's text logits of int4 against the full-precision LM on the same weights and input:
    off by quantization (0.37 relative on the tiny preset, int8: 0.02), far from unrelated logits (~1.4)."""
    from reference_model import DuplexSpec, build_duplex

    torch.set_num_threads(1)
    full = build_duplex(DuplexSpec(seed=0, temp=0, temp_text=0))
    int4 = build_duplex(DuplexSpec(flags="int4", seed=0, temp=0, temp_text=0))
    pcm = torch.randn(1, 1, full.frame_size, generator=torch.Generator().manual_seed(0)) * 0.1
    full.step(pcm)
    int4.step(pcm)
    want, got = full.streamer.last_text_logits.float(), int4.streamer.last_text_logits.float()
    rel = float((got - want).norm() / want.norm())
    assert 1e-3 < rel < 0.6, rel


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_calibrated_methods_run_on_the_lms_own_streaming(tiny_lm, method: str) -> None:
    from reference_model.quant.calibrate import lm_calibration
    from reference_model.quant.swap import quantize_model

    lm = copy.deepcopy(tiny_lm)

    def first_layer(name, module):
        return name.startswith("transformer.layers.0.")

    stats = lm_calibration(lm, None, frames=12, batch=2, include=first_layer)
    assert set(stats) == {
        "transformer.layers.0.self_attn.in_projs.0",
        "transformer.layers.0.self_attn.out_projs.0",
        "transformer.layers.0.gating.linear_in",
        "transformer.layers.0.gating.linear_out",
    }
    assert all(s.count == 24 for s in stats.values())  # 12 frames x 2 streams
    summary = quantize_model(lm, 4, method, include=first_layer, stats=stats)
    assert len(summary.quantized) == 4
    name = "transformer.layers.0.gating.linear_out"
    x = stats[name].samples
    ref = tiny_lm.get_submodule(name)(x)
    got = lm.get_submodule(name)(x)
    assert (got - ref).norm() / ref.norm() < 0.2


def test_codec_int8_streams_close_to_the_full_precision_codec() -> None:
    from reference_model.codec import CodecStreamer, load_codec
    from reference_model.enhancements.quantize import QuantChoice
    from reference_model.enhancements.quantize import apply_codec as apply

    torch.manual_seed(0)
    codec = load_codec("tiny")
    qcodec = copy.deepcopy(codec)
    summary = apply(None, qcodec, QuantChoice(8, "rtn")).summary
    assert summary.quantized and not summary.skipped
    wav = torch.randn(1, 1, 4 * codec.frame_size) * 0.1
    latent, qlatent = codec.encode_latent(wav), qcodec.encode_latent(wav)
    assert (qlatent - latent).norm() / latent.norm() < 0.05
    streamer = CodecStreamer(qcodec)
    for i in range(4):
        frame = streamer.decode(streamer.encode(wav[..., i * codec.frame_size : (i + 1) * codec.frame_size]))
        assert frame.shape == (1, 1, codec.frame_size) and torch.isfinite(frame).all()
    # the int8 codec streams what it computes offline: the same codes, the same audio from them
    fs = codec.frame_size
    enc, dec = CodecStreamer(qcodec), CodecStreamer(qcodec)
    streamed = torch.cat([enc.encode(wav[..., i * fs : (i + 1) * fs]) for i in range(4)], dim=-1)
    offline = qcodec.encode(wav)
    assert torch.equal(streamed, offline)
    audio = torch.cat([dec.decode(offline[..., i : i + 1]) for i in range(4)], dim=-1)
    d = qcodec.decode_delay  # an iSTFT decoder streams offline's audio one window less a hop late
    torch.testing.assert_close(
        audio[..., d:], qcodec.decode(offline)[..., : audio.shape[-1] - d], atol=1e-4, rtol=0
    )

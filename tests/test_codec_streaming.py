"""Streaming behaviour of our codec on its own: streaming == offline, per-item reset, codebook counts."""

from __future__ import annotations

import pytest
import torch

from reference_model.codec import CodecStreamer, load_codec
from reference_model.codec.conv import StreamingConvTranspose1d
from reference_model.errors import ConfigError


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    c = load_codec("tiny", "random", num_codebooks=None)
    with torch.no_grad():  # make the transformers matter (layer scale 0.01 at init)
        for name, p in c.named_parameters():
            if "layer_scale" in name:
                p.fill_(0.3)
    return c


def _stream(streamer: CodecStreamer, wav: torch.Tensor):
    n = wav.shape[-1] // 1920
    codes = torch.cat([streamer.encode(wav[..., f * 1920 : (f + 1) * 1920]) for f in range(n)], -1)
    audio = torch.cat([streamer.decode(codes[..., f : f + 1]) for f in range(n)], -1)
    return codes, audio


def test_contract_attributes(codec):
    assert codec.sample_rate == 24000 and codec.frame_size == 1920 and codec.frame_rate == 12.5
    assert codec.max_codebooks >= 16 and codec.num_codebooks == codec.max_codebooks
    assert codec.cardinality == 2048


def test_streaming_equals_offline(codec):
    wav = torch.randn(2, 1, 1920 * 6) * 0.1
    with torch.no_grad():
        codes = codec.encode(wav)
        audio = codec.decode(codes)
    s_codes, s_audio = _stream(CodecStreamer(codec, 2), wav)
    assert torch.equal(s_codes, codes)
    assert (s_audio - audio).abs().max() < 1e-5


def test_offline_pads_to_whole_frames(codec):
    wav = torch.randn(1, 1, 1920 * 2 + 100) * 0.1
    with torch.no_grad():
        codes = codec.encode(wav)
        assert codes.shape[-1] == 3
        assert codec.decode(codes).shape == (1, 1, 1920 * 3)


def test_reset_mask_restarts_only_selected_items(codec):
    torch.manual_seed(3)
    a = torch.randn(2, 1, 1920 * 3) * 0.1
    b = torch.randn(2, 1, 1920 * 3) * 0.1
    streamer = CodecStreamer(codec, 2)
    _stream(streamer, a)
    streamer.reset(torch.tensor([True, False]))
    codes, audio = _stream(streamer, b)
    fresh_codes, fresh_audio = _stream(CodecStreamer(codec, 1), b[:1])
    assert torch.equal(codes[:1], fresh_codes)
    assert (audio[:1] - fresh_audio).abs().max() < 1e-5
    # item 1 went on from its history: it must differ from a fresh start on the same input
    other_codes, other_audio = _stream(CodecStreamer(codec, 1), b[1:])
    assert (audio[1:] - other_audio).abs().max() > 1e-4
    streamer.reset()
    again_codes, _ = _stream(streamer, b)
    assert torch.equal(again_codes[:1], fresh_codes) and torch.equal(again_codes[1:], other_codes)


def test_decode_with_fewer_codebooks(codec):
    wav = torch.randn(1, 1, 1920 * 2) * 0.1
    with torch.no_grad():
        codes = codec.encode(wav)
        few = codec.decode(codes[:, :4])
        # missing codebooks contribute nothing: same as zero vectors for codebooks 4..
        q = codec.quantizer
        latent = q.rvq_first.decode(codes[:, :1]) + q.rvq_rest.decode(codes[:, 1:4])
        assert (few - codec.decode_latent(latent)).abs().max() < 1e-6
    streamer = CodecStreamer(codec, 1)
    out = torch.cat([streamer.decode(codes[:, :4, f : f + 1]) for f in range(2)], -1)
    assert (out - few).abs().max() < 1e-5


def test_set_num_codebooks(codec):
    codec.set_num_codebooks(8)
    try:
        with torch.no_grad():
            assert codec.encode(torch.zeros(1, 1, 1920)).shape == (1, 8, 1)
        with pytest.raises(ValueError):
            codec.set_num_codebooks(codec.max_codebooks + 1)
    finally:
        codec.set_num_codebooks(codec.max_codebooks)


def test_bad_inputs_are_one_line_errors(codec):
    streamer = CodecStreamer(codec, 1)
    with pytest.raises(ValueError, match="frame"):
        streamer.encode(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError):
        streamer.decode(torch.zeros(1, 8, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        streamer.reset(torch.tensor([True, False]))
    with pytest.raises(ConfigError):
        load_codec("nope")


@pytest.mark.parametrize(
    "groups,k,s,t", [(1, 16, 8, 3), (2, 4, 2, 5), (6, 6, 2, 1), (1, 5, 2, 4), (1, 9, 3, 1)]
)
def test_conv_transpose_matmul_matches_torch(groups, k, s, t):
    torch.manual_seed(0)
    conv = StreamingConvTranspose1d(6, 6 if groups > 1 else 4, k, s, groups=groups)
    x = torch.randn(2, 6, t * 4)
    with torch.no_grad():
        ref = conv.convtr.convtr(x)[..., : x.shape[-1] * s]
        assert (conv(x) - ref).abs().max() < 1e-5
        state = conv.new_state(2)
        chunks = [conv(x[..., i : i + t], state) for i in range(0, x.shape[-1], t)]
    assert (torch.cat(chunks, -1) - ref).abs().max() < 1e-5

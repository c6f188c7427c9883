"""The causal iSTFT decoder (``tiny-istft``): streaming equals offline delayed by n_fft - hop, causality,
per-item reset, its config switch, and a warm start from a SEANet codec's encoder side."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_model.codec import CodecStreamer, MimiCodec, codec_config, load_codec
from reference_model.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def codec() -> MimiCodec:
    torch.manual_seed(0)
    c = load_codec("tiny-istft", "random", num_codebooks=8)
    with torch.no_grad():  # the blocks and transformer matter (small layer scales at init)
        for name, p in c.named_parameters():
            if "layer_scale" in name or name.endswith(".gamma"):
                p.fill_(0.3)
    return c.eval()


def _stream_decode(codec: MimiCodec, codes: torch.Tensor) -> torch.Tensor:
    s = CodecStreamer(codec, codes.shape[0])
    return torch.cat([s.decode(codes[..., f : f + 1]) for f in range(codes.shape[-1])], -1)


def test_delay_is_one_window_less_a_hop_and_in_the_config(codec):
    cfg = codec_config("tiny-istft")
    assert cfg.decoder["n_fft"] == 960 and cfg.decoder["hop_length"] == 240
    assert codec.decode_delay == cfg.decoder_delay == 720  # 30 ms at 24 kHz
    assert codec_config("tiny").decoder_delay == 0 and codec_config("mimi").decoder is None
    assert codec_config(cfg.to_dict()).decoder == cfg.decoder  # the section survives a round trip


def test_streaming_equals_offline_delayed(codec):
    torch.manual_seed(1)
    codes = torch.randint(0, 2048, (2, 8, 7))
    with torch.no_grad():
        offline = codec.decode(codes)
    streamed = _stream_decode(codec, codes)
    d = codec.decode_delay
    assert offline.shape == streamed.shape == (2, 1, 7 * 1920)
    assert float(offline.abs().max()) > 1e-3  # not a silent decoder
    torch.testing.assert_close(streamed[..., d:], offline[..., :-d], atol=1e-5, rtol=1e-4)


def test_output_up_to_frame_t_ignores_codes_after_t(codec):
    torch.manual_seed(2)
    codes = torch.randint(0, 2048, (1, 8, 6))
    other = codes.clone()
    other[..., 3:] = torch.randint(0, 2048, (1, 8, 3))
    a, b = _stream_decode(codec, codes), _stream_decode(codec, other)
    assert torch.equal(a[..., : 3 * 1920], b[..., : 3 * 1920])
    assert not torch.equal(a[..., 3 * 1920 :], b[..., 3 * 1920 :])
    with torch.no_grad():  # offline: every sample before frame 3's first window is the same too
        oa, ob = codec.decode(codes), codec.decode(other)
    cut = 3 * 1920 - codec.decode_delay
    assert torch.equal(oa[..., :cut], ob[..., :cut])


def test_reset_restarts_only_the_masked_stream(codec):
    torch.manual_seed(3)
    codes = torch.randint(0, 2048, (2, 8, 4))
    s = CodecStreamer(codec, 2)
    for f in range(4):
        s.decode(codes[..., f : f + 1])
    s.reset(torch.tensor([True, False]))
    fresh = CodecStreamer(codec, 2)
    a = s.decode(codes[..., :1])
    b = fresh.decode(codes[..., :1])
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])


def test_bad_decoder_sections_are_config_errors():
    base = codec_config("tiny").to_dict()
    bad = (
        {"kind": "hifigan"},
        {"kind": "istft", "hop": 240},
        {"kind": "istft", "n_fft": 200},
        {"kind": "istft", "n_fft": 961, "hop_length": 240},
        {"kind": "istft", "dim": 0},
    )
    for section in bad:
        with pytest.raises(ConfigError, match="decoder"):
            codec_config({**base, "decoder": section})
    with pytest.raises(ValueError, match="whole STFT frames"):  # 25 Hz latent, hop 250 at 24 kHz: 3.84 frames
        MimiCodec(codec_config({**base, "decoder": {"kind": "istft", "hop_length": 250, "n_fft": 1000}}))


def test_an_istft_codec_warm_starts_from_a_seanet_codecs_encoder_side(tmp_path):
    from vemi_eval.training.codec_model import codes_digest, warm_start_into
    from vemi_eval.training.state import write_weights

    torch.manual_seed(4)
    seanet = MimiCodec(codec_config("tiny"))
    path = tmp_path / "seanet.safetensors"
    write_weights(path, seanet.state_dict(), {"preset": "tiny"})
    istft = MimiCodec(codec_config("tiny-istft"))
    assert warm_start_into(istft, path) == ["decoder"]
    audio = [torch.randn(1920 * 3).numpy() * 0.1]
    assert codes_digest(istft, audio) == codes_digest(seanet, audio)  # the same tokeniser
    assert warm_start_into(MimiCodec(codec_config("tiny")), path) == []  # same kind: strict, whole
    other = MimiCodec(codec_config({**codec_config("tiny-istft").to_dict(), "quantizer": {
        **codec_config("tiny").quantizer, "bins": 1024}}))  # fmt: skip
    with pytest.raises(CheckpointError, match="encoder side"):
        warm_start_into(other, path)
    # committed weights are float16: a warm start trains in the codec's own float32 (it failed in conv1d)
    half = tmp_path / "half.safetensors"
    write_weights(half, {k: v.half() if v.is_floating_point() else v for k, v in seanet.state_dict().items()},
                  {"preset": "tiny"})  # fmt: skip
    again = MimiCodec(codec_config("tiny"))
    assert warm_start_into(again, half) == []
    assert {v.dtype for v in again.state_dict().values() if v.is_floating_point()} == {torch.float32}


def test_a_long_input_streamed_by_the_codec_kind_equals_offline(codec, monkeypatch):
    from vemi_eval.data import codec_roundtrip as codec_kind

    torch.manual_seed(5)
    codes = torch.randint(0, 2048, (1, 8, 5))
    with torch.no_grad():
        offline = codec.decode(codes)[0, 0].numpy()
    monkeypatch.setattr(codec_kind, "STREAM_ABOVE_S", 0.1)  # 5 frames = 0.4 s: streamed
    streamed = codec_kind.decode(codec, codes, 8, 5 * 1920 - 100)
    assert streamed.shape == (5 * 1920 - 100,)
    np.testing.assert_allclose(streamed, offline[: 5 * 1920 - 100], atol=1e-5)


def test_an_istft_checkpoint_loads_under_the_tiny_preset_from_its_metadata(tmp_path, codec):
    import json

    import reference_model as rm
    from vemi_eval.training.state import write_weights

    path = tmp_path / "istft.safetensors"
    meta = {"preset": "tiny-istft", "decoder": json.dumps(codec.config.decoder)}
    write_weights(path, codec.state_dict(), meta)
    loaded = load_codec("tiny", path)
    assert loaded.decode_delay == 720 and loaded.config.decoder == codec.config.decoder
    rm.check_weights(rm.DuplexSpec(lm="tiny", codec="tiny", codec_checkpoint=str(path)))  # keys match
    other = {**codec.config.decoder, "dim": 128}
    with pytest.raises(CheckpointError, match="decoder"):
        load_codec({**codec_config("tiny").to_dict(), "decoder": other}, path)

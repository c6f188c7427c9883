"""The causal STFT encoder front-end (``tiny-stft``): streaming codes equal offline codes, causality (codes up
to frame t ignore input after t), per-item reset, its config switch and its checkpoint metadata."""

from __future__ import annotations

import json

import pytest
import torch

from reference_model.codec import CodecStreamer, MimiCodec, codec_config, load_codec
from reference_model.errors import CheckpointError, ConfigError

FRAME = 1920


@pytest.fixture(scope="module")
def codec() -> MimiCodec:
    torch.manual_seed(0)
    c = load_codec("tiny-stft", "random", num_codebooks=8)
    with torch.no_grad():  # the blocks and transformer matter (small layer scales at init)
        for name, p in c.named_parameters():
            if "layer_scale" in name or name.endswith(".gamma"):
                p.fill_(0.3)
    return c.eval()


def _speechlike(batch: int, frames: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames * FRAME) / 24000.0
    tone = torch.sin(2 * torch.pi * 180 * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
    return (0.1 * tone + 0.02 * torch.randn(batch, 1, frames * FRAME, generator=g)).float()


def _stream_latent(codec: MimiCodec, wav: torch.Tensor) -> torch.Tensor:
    state = codec.new_encoder_state(wav.shape[0])
    with torch.no_grad():
        return torch.cat(
            [codec.encode_latent(wav[..., i : i + FRAME], state) for i in range(0, wav.shape[-1], FRAME)], -1
        )


def test_the_preset_is_spectral_on_both_sides_and_the_section_survives_a_round_trip(codec):
    cfg = codec_config("tiny-stft")
    assert cfg.encoder["kind"] == "stft" and cfg.decoder["kind"] == "istft"
    assert codec_config(cfg.to_dict()).encoder == cfg.encoder
    assert codec_config("tiny").encoder is None and codec_config("mimi").encoder is None
    assert type(codec.encoder).__name__ == "STFTEncoder"
    n_seanet = sum(p.numel() for p in MimiCodec(codec_config("tiny-istft")).encoder.parameters())
    assert sum(p.numel() for p in codec.encoder.parameters()) != n_seanet  # another module, not a relabel


def test_streaming_latent_and_codes_equal_offline(codec):
    wav = _speechlike(2, 6, seed=1)
    with torch.no_grad():
        offline = codec.encode_latent(wav)
    streamed = _stream_latent(codec, wav)
    assert offline.shape == streamed.shape == (2, 128, 6)
    torch.testing.assert_close(streamed, offline, atol=1e-4, rtol=1e-4)
    s = CodecStreamer(codec, 2)
    codes = torch.cat([s.encode(wav[..., i : i + FRAME]) for i in range(0, wav.shape[-1], FRAME)], -1)
    with torch.no_grad():
        assert torch.equal(codes[:, :1], codec.encode(wav)[:, :1])  # the semantic level, bit-exact


def test_latent_up_to_frame_t_ignores_input_after_t(codec):
    wav = _speechlike(1, 6, seed=2)
    other = wav.clone()
    other[..., 3 * FRAME :] = torch.randn(1, 1, 3 * FRAME) * 0.2
    with torch.no_grad():
        a, b = codec.encode_latent(wav), codec.encode_latent(other)
    assert torch.equal(a[..., :3], b[..., :3])
    assert not torch.allclose(a[..., 3:], b[..., 3:])


def test_reset_restarts_only_the_masked_stream(codec):
    wav = _speechlike(2, 3, seed=3)
    s = CodecStreamer(codec, 2)
    for i in range(0, wav.shape[-1], FRAME):
        s.encode(wav[..., i : i + FRAME])
    s.reset(torch.tensor([True, False]))
    fresh = CodecStreamer(codec, 2)
    with torch.no_grad():
        a = codec.encode_latent(wav[..., :FRAME], s._enc)
        b = codec.encode_latent(wav[..., :FRAME], fresh._enc)
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])


def test_bad_encoder_sections_are_config_errors():
    base = codec_config("tiny").to_dict()
    for section in (
        {"kind": "seanet"},
        {"kind": "stft", "hop": 240},
        {"kind": "stft", "n_fft": 961},
        {"kind": "stft", "dim": 0},
        {"kind": "stft", "hop_length": 250, "n_fft": 1000},  # does not divide the 960-sample encoder hop
    ):
        with pytest.raises(ConfigError, match="encoder"):
            codec_config({**base, "encoder": section})


def test_a_checkpoint_records_its_encoder_and_loads_under_another_preset(tmp_path, codec):
    from vemi_eval.training.state import write_weights

    path = tmp_path / "stft.safetensors"
    meta = {
        "preset": "tiny-stft",
        "decoder": json.dumps(codec.config.decoder),
        "encoder": json.dumps(codec.config.encoder),
    }
    write_weights(path, codec.state_dict(), meta)
    loaded = load_codec("tiny", path)
    assert loaded.config.encoder == codec.config.encoder and loaded.decode_delay == 720
    wav = _speechlike(1, 2, seed=4)
    with torch.no_grad():
        assert torch.equal(loaded.encode(wav), codec.encode(wav))
    with pytest.raises(CheckpointError, match="encoder"):
        load_codec({**codec_config("tiny").to_dict(), "encoder": {"kind": "stft", "dim": 128}}, path)


def test_a_spectral_encoder_codec_warm_starts_from_an_istft_codec_all_but_its_encoder(tmp_path):
    from vemi_eval.training.codec_model import warm_start_into
    from vemi_eval.training.state import write_weights

    torch.manual_seed(6)
    istft = MimiCodec(codec_config("tiny-istft"))
    path = tmp_path / "istft.safetensors"
    write_weights(path, istft.state_dict(), {"preset": "tiny-istft"})
    stft = MimiCodec(codec_config("tiny-stft"))
    assert warm_start_into(stft, path) == ["encoder"]
    for name, p in istft.state_dict().items():
        if not name.startswith("encoder."):
            assert torch.equal(stft.state_dict()[name], p), name
    seanet = MimiCodec(codec_config("tiny"))  # another decoder and another encoder: both start fresh
    assert warm_start_into(seanet, path) == ["decoder"]
    both = tmp_path / "stft.safetensors"
    write_weights(both, stft.state_dict(), {"preset": "tiny-stft"})
    assert sorted(warm_start_into(MimiCodec(codec_config("tiny")), both)) == ["decoder", "encoder"]

"""Our MimiCodec against moshi's MimiModel on the same random weights: same keys, same codes, same audio."""

from __future__ import annotations

import copy

import pytest
import safetensors.torch as safetensors_torch
import torch
from moshi.models import loaders  # plain import: a missing moshi must fail the suite, never skip it

from reference_model.codec import PRESETS, CodecStreamer, load_codec
from reference_model.errors import CheckpointError


def _moshi_mimi(preset: str):
    """moshi's MimiModel for the preset, with random codebooks (moshi's default ones are all zero)."""
    cfg = copy.deepcopy(PRESETS[preset])
    model = loaders.get_mimi(None, mimi_config=cfg, num_codebooks=cfg["quantizer"]["n_q"])
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("embedding_sum"):
                buf.copy_(torch.randn_like(buf))
            elif name.endswith("cluster_usage"):
                buf.copy_(torch.rand_like(buf) + 0.5)
            elif name.endswith("_initialized"):
                buf.fill_(1.0)
        for name, p in model.named_parameters():
            if "layer_scale" in name:  # 0.01 would hide transformer errors
                p.copy_(torch.rand_like(p) * 0.5)
    return model


def _save(model, path) -> None:
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def _check_against_moshi(preset: str, frames: int, batch: int, tmp_path) -> None:
    torch.manual_seed(0)
    ref = _moshi_mimi(preset)
    path = tmp_path / "mimi.safetensors"
    _save(ref, path)
    ours = load_codec(preset, path, num_codebooks=None)
    assert set(ours.state_dict()) == set(ref.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    wav = torch.randn(batch, 1, 1920 * frames) * 0.1
    with torch.no_grad():
        codes_ref = ref.encode(wav)
        codes = ours.encode(wav)
        assert torch.equal(codes, codes_ref)
        out_ref = ref.decode(codes_ref)
        out = ours.decode(codes)
        assert out.shape == out_ref.shape == wav.shape
        assert (out - out_ref).abs().max() < 1e-4
        with ref.streaming(batch):
            s_codes_ref = torch.cat(
                [ref.encode(wav[..., f * 1920 : (f + 1) * 1920]) for f in range(frames)], -1
            )
            s_out_ref = torch.cat([ref.decode(codes[..., f : f + 1]) for f in range(frames)], -1)
    streamer = CodecStreamer(ours, batch)
    s_codes = torch.cat([streamer.encode(wav[..., f * 1920 : (f + 1) * 1920]) for f in range(frames)], -1)
    s_out = torch.cat([streamer.decode(codes[..., f : f + 1]) for f in range(frames)], -1)
    assert torch.equal(s_codes, s_codes_ref)
    assert torch.equal(s_codes, codes)
    assert (s_out - s_out_ref).abs().max() < 1e-4
    assert (s_out - out).abs().max() < 1e-5


def test_tiny_config_matches_moshi(tmp_path):
    torch.set_num_threads(1)
    _check_against_moshi("tiny", frames=5, batch=2, tmp_path=tmp_path)


def test_real_mimi_config_matches_moshi(tmp_path):
    torch.set_num_threads(1)
    _check_against_moshi("mimi", frames=3, batch=1, tmp_path=tmp_path)


def test_fewer_codebooks_match_moshi(tmp_path):
    torch.manual_seed(1)
    ref = _moshi_mimi("tiny")
    ref.set_num_codebooks(8)
    path = tmp_path / "tiny.safetensors"
    _save(ref, path)
    ours = load_codec("tiny", path, num_codebooks=8)
    wav = torch.randn(1, 1, 1920 * 3) * 0.1
    with torch.no_grad():
        codes = ours.encode(wav)
        assert codes.shape == (1, 8, 3)
        assert torch.equal(codes, ref.encode(wav))
        assert (ours.decode(codes[:, :4]) - ref.decode(codes[:, :4])).abs().max() < 1e-4


def test_wrong_checkpoint_key_is_one_line_error(tmp_path):
    torch.manual_seed(0)
    codec = load_codec("tiny", "random")
    state = {k: v.contiguous() for k, v in codec.state_dict().items()}
    state["encoder.model.0.conv.weight"] = state.pop("encoder.model.0.conv.conv.weight")
    path = tmp_path / "bad.safetensors"
    safetensors_torch.save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        load_codec("tiny", path)
    msg = str(err.value)
    assert "\n" not in msg and "encoder.model.0.conv" in msg


def test_missing_checkpoint_and_shape_mismatch(tmp_path):
    with pytest.raises(CheckpointError):
        load_codec("tiny", tmp_path / "absent.safetensors")
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    _save(load_codec("tiny", "random"), path)
    cfg = copy.deepcopy(PRESETS["tiny"])
    cfg["quantizer"]["bins"] = 1024
    with pytest.raises(CheckpointError) as err:
        load_codec(cfg, path)
    assert "\n" not in str(err.value)

"""dynamic-bitrate: fewer codebooks on silence and noise, the full set on speech; bounds checked."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reference_model import CodecStreamer, FlagError, load_codec, parse_flags
from reference_model.enhancements.dynamic_bitrate import apply, decode_sent

SR, FRAME = 24000, 1920


def speech_then_silence(seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """2 s: voiced harmonic 'speech' (0.96 s), silence (0.64 s), white noise (0.4 s). Frame labels too."""
    rng = np.random.default_rng(seed)
    n_speech, n_sil, n_noise = 12 * FRAME, 8 * FRAME, 5 * FRAME
    t = np.arange(n_speech) / SR
    f0 = 140 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    speech = 0.3 * sum(np.sin(h * phase) / h for h in range(1, 10))
    silence = 1e-5 * rng.standard_normal(n_sil)
    noise = 0.05 * rng.standard_normal(n_noise)
    wav = np.concatenate([speech, silence, noise]).astype(np.float32)
    labels = np.array(["speech"] * 12 + ["silence"] * 8 + ["noise"] * 5)
    return torch.from_numpy(wav).view(1, 1, -1), labels


@pytest.fixture(scope="module")
def codecs():
    torch.manual_seed(0)
    plain = load_codec("tiny", "random")
    torch.manual_seed(0)
    adaptive = load_codec("tiny", "random")
    meter = apply(None, adaptive, parse_flags("dynamic-bitrate=2")[0].value).meter
    return plain, adaptive, meter


def test_silence_and_noise_get_fewer_codebooks_and_speech_the_full_set(codecs) -> None:
    plain, adaptive, meter = codecs
    wav, labels = speech_then_silence()
    sent = adaptive.encode(wav)
    full = plain.encode(wav)
    n = meter.last[0].numpy()
    n_in_use = plain.num_codebooks
    assert (n[labels == "speech"] == n_in_use).all()
    assert (n[labels == "silence"][2:] == 2).all()  # after the 2-frame hangover
    assert (n[labels == "noise"][2:] < n_in_use).all()
    # what is sent is the full code where sent, -1 where not
    k = torch.arange(sent.shape[1])[None, :, None]
    was_sent = k < torch.from_numpy(n)[None, None, :]
    assert torch.equal(sent[was_sent], full[was_sent]) and bool((sent[~was_sent] == -1).all())
    assert meter.mean_kbps < meter.fixed_kbps
    assert meter.fixed_kbps == pytest.approx(n_in_use * math.log2(plain.cardinality) * 12.5 / 1000)


def test_decode_of_sent_codes_equals_decoding_the_first_n_codebooks(codecs) -> None:
    plain, adaptive, meter = codecs
    wav, _ = speech_then_silence()
    full = plain.encode(wav)
    assert torch.allclose(decode_sent(plain.quantizer, full), plain.quantizer.decode(full), atol=1e-6)
    sent = adaptive.encode(wav)
    n = meter.last[0]
    lat = adaptive.quantizer.decode(sent)
    for f in (0, 15):  # a speech frame (all codebooks) and a silence frame (2)
        ref = plain.quantizer.decode(full[:, : int(n[f]), f : f + 1])
        assert torch.allclose(lat[..., f : f + 1], ref, atol=1e-5)
    # and the waveform decodes, offline and streaming
    assert adaptive.decode(sent).shape == wav.shape
    streamer = CodecStreamer(adaptive, batch_size=1)
    frames = [streamer.decode(sent[..., f : f + 1]) for f in range(sent.shape[-1])]
    assert torch.allclose(torch.cat(frames, dim=-1), adaptive.decode(sent), atol=1e-4)


def test_bounds_are_validated_in_one_line() -> None:
    for bad in ("dynamic-bitrate=0", "dynamic-bitrate=5-3", "dynamic-bitrate=x"):
        with pytest.raises(FlagError) as err:
            parse_flags(bad)
        assert "\n" not in str(err.value)
    codec = load_codec("tiny", "random")
    with pytest.raises(FlagError, match="exceeds the 8 codebooks"):
        apply(None, codec, parse_flags("dynamic-bitrate=2-12")[0].value)

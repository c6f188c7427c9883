"""Noise generation and mixing: exact SNR (active-speech power), determinism, spectra, reverberation."""

from __future__ import annotations

import numpy as np
import pytest

from vemi_eval.data import DataError
from vemi_eval.data.audio import active_power
from vemi_eval.data.noise import (
    NOISE_TYPES,
    make_noise,
    measured_snr,
    mix_at_snr,
    reverberate,
    room_impulse_response,
)

SR = 16000


def speech_like(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Bursts with pauses: active-speech power differs from whole-clip power (the case P.56 is for)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = (np.sin(np.arange(n) * 2 * np.pi * 2 / SR) > 0).astype(float)
    return (0.05 * rng.standard_normal(n) * env).astype(np.float32)


@pytest.mark.parametrize("kind", NOISE_TYPES)
@pytest.mark.parametrize("snr", [30, 20, 10, 5, 0])
def test_mix_hits_the_requested_snr(kind, snr):
    s = speech_like()
    talkers = [speech_like(1.3, seed=k) for k in range(1, 4)]
    noise = make_noise(kind, s.size, SR, seed=1, talkers=talkers)
    mix = mix_at_snr(s, noise, snr, SR)
    assert np.abs(mix).max() < 0.99
    assert abs(measured_snr(s, mix.astype(np.float64) - s, SR) - snr) < 0.1


def test_active_power_ignores_pauses():
    s = speech_like()
    assert active_power(s, SR) == pytest.approx(2 * np.mean(s.astype(np.float64) ** 2), rel=0.1)


def test_noises_are_seeded_and_coloured():
    a = make_noise("pink", 32768, SR, seed=3)
    assert np.array_equal(a, make_noise("pink", 32768, SR, seed=3))
    assert not np.array_equal(a, make_noise("pink", 32768, SR, seed=4))
    f = np.fft.rfftfreq(32768, 1 / SR)

    def band(x, lo, hi):
        p = np.abs(np.fft.rfft(x)) ** 2
        return p[(f >= lo) & (f < hi)].mean()

    for kind, slope_db in (("white", 0), ("pink", -3), ("brown", -6)):  # per octave
        x = make_noise(kind, 32768, SR, seed=0)
        octave = 10 * np.log10(band(x, 2000, 4000) / band(x, 1000, 2000))
        assert abs(octave - slope_db) < 1.0, (kind, octave)
    hum = make_noise("hum", SR, SR, seed=0, mains_hz=60.0)
    spec = np.abs(np.fft.rfft(hum))
    assert np.fft.rfftfreq(SR, 1 / SR)[np.argmax(spec)] == pytest.approx(60.0, abs=1.0)
    with pytest.raises(DataError, match="babble"):
        make_noise("babble", 100, SR, seed=0)
    with pytest.raises(DataError, match="unknown noise"):
        make_noise("rain", 100, SR, seed=0)


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_rir_decays_by_60_db_over_rt60(rt60):
    h = room_impulse_response(rt60, SR, seed=0)
    tail = h[int(0.0025 * SR) :]
    edc = np.cumsum(tail[::-1] ** 2)[::-1]  # Schroeder backward integration
    edc_db = 10 * np.log10(edc / edc[0])
    t = np.arange(edc.size) / SR
    fit = (edc_db < -5) & (edc_db > -25)  # T20, extrapolated to 60 dB
    slope = np.polyfit(t[fit], edc_db[fit], 1)[0]
    assert -60 / slope == pytest.approx(rt60, rel=0.1)
    y = reverberate(speech_like(), rt60, SR, seed=0)
    assert y.shape == (2 * SR,) and np.isfinite(y).all()

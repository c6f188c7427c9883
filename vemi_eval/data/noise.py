"""Seeded noises, reverberation and mixing at an exact SNR.

SNR definition (documented because every figure depends on it):
    SNR_dB = 10 log10( P_speech_active / P_noise )
where P_speech_active is the mean power of the speech's *active* frames (20 ms frames within 40 dB of the
loudest one, see ``audio.active_power``: pauses do not lower the speech level, a simplified ITU-T P.56
active level) and P_noise the mean power of the added noise over the whole clip. The noise is scaled so
the equation holds exactly (to float precision); if the mix would clip, speech and noise are scaled down by
the same gain, which keeps the SNR.
"""

from __future__ import annotations

import numpy as np

from . import DataError
from .audio import active_power

NOISE_TYPES = ("white", "pink", "brown", "babble", "hum")
DEFAULT_SNR_LADDER = (30, 20, 10, 5, 0)
BABBLE_TALKERS = 4


def _colored(n: int, rng: np.random.Generator, exponent: float, sample_rate: int) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (pink 1, brown 2), flat below 20 Hz (no DC)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    f = np.maximum(f, 20.0)
    spec *= f ** (-exponent / 2)
    x = np.fft.irfft(spec, n)
    return x / np.sqrt(np.mean(x**2))


def hum(n: int, sample_rate: int, rng: np.random.Generator, mains_hz: float = 50.0, harmonics: int = 8):
    """Mains hum: the fundamental and its harmonics with 1/k amplitudes and random phases."""
    t = np.arange(n) / sample_rate
    x = np.zeros(n)
    for k in range(1, harmonics + 1):
        if k * mains_hz >= sample_rate / 2:
            break
        x += np.sin(2 * np.pi * k * mains_hz * t + rng.uniform(0, 2 * np.pi)) / k
    return x / np.sqrt(np.mean(x**2))


def babble(n: int, sample_rate: int, rng: np.random.Generator, talkers: list[np.ndarray]) -> np.ndarray:
    """A mix of other speakers' utterances (each looped to length from a random offset, equal levels)."""
    if not talkers:
        raise DataError("babble noise needs utterances of other speakers")
    x = np.zeros(n)
    for a in talkers:
        a = np.asarray(a, dtype=np.float64)
        reps = int(np.ceil((n + a.size) / a.size))
        start = int(rng.integers(0, a.size))
        seg = np.tile(a, reps)[start : start + n]
        x += seg / np.sqrt(max(active_power(a, sample_rate), 1e-20))
    return x / np.sqrt(np.mean(x**2))


def make_noise(
    kind: str,
    n: int,
    sample_rate: int,
    seed: int,
    *,
    talkers: list[np.ndarray] | None = None,
    mains_hz: float = 50.0,
) -> np.ndarray:
    """Unit-power noise of ``n`` samples (float64). ``talkers`` are the babble sources."""
    rng = np.random.default_rng(seed)
    if kind == "white":
        x = rng.standard_normal(n)
        return x / np.sqrt(np.mean(x**2))
    if kind == "pink":
        return _colored(n, rng, 1.0, sample_rate)
    if kind == "brown":
        return _colored(n, rng, 2.0, sample_rate)
    if kind == "hum":
        return hum(n, sample_rate, rng, mains_hz)
    if kind == "babble":
        return babble(n, sample_rate, rng, talkers or [])
    raise DataError(f"unknown noise type {kind!r} (known: {', '.join(NOISE_TYPES)}, reverb)")


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int) -> np.ndarray:
    """speech + noise scaled to ``snr_db`` (definition in the module docstring); float32, never clipping."""
    s = np.asarray(speech, dtype=np.float64)
    if noise.size < s.size:
        raise DataError(f"noise ({noise.size} samples) shorter than speech ({s.size})")
    v = np.asarray(noise[: s.size], dtype=np.float64)
    p_s, p_v = active_power(s, sample_rate), float(np.mean(v**2))
    if p_s <= 0 or p_v <= 0:
        raise DataError("cannot mix at an SNR: silent speech or silent noise")
    v = v * np.sqrt(p_s / (p_v * 10 ** (snr_db / 10)))
    mix = s + v
    peak = float(np.abs(mix).max())
    if peak > 0.99:
        mix *= 0.99 / peak  # same gain on speech and noise: the SNR is unchanged
    return mix.astype(np.float32)


def measured_snr(speech: np.ndarray, noise: np.ndarray, sample_rate: int) -> float:
    """SNR by the module's definition, for checking a mix (noise = mix - speech at the same gain)."""
    return 10 * np.log10(
        active_power(speech, sample_rate) / float(np.mean(np.asarray(noise, np.float64) ** 2))
    )


def room_impulse_response(
    rt60_s: float, sample_rate: int, seed: int, drr_db: float | None = None
) -> np.ndarray:
    """A synthetic RIR: a direct-path impulse then Gaussian noise decaying by 60 dB over ``rt60_s``.

    Exponential decay exp(-6.91 t / RT60) on the amplitude gives -60 dB at t = RT60 (Polack's model);
    the tail starts 2.5 ms after the direct sound and lasts 1.2 x RT60. The direct-to-reverberant ratio
    defaults to 10 log10(0.5 / RT60) dB (+2.2 dB at 0.3 s, -3 dB at 1 s): a talker a few metres away,
    whose reverberant share grows with the room's RT60 as in real rooms.
    """
    if rt60_s <= 0:
        raise DataError(f"RT60 must be > 0 s, got {rt60_s}")
    rng = np.random.default_rng(seed)
    n = int(1.2 * rt60_s * sample_rate) + 1
    t = np.arange(n) / sample_rate
    h = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)
    h[: int(0.0025 * sample_rate)] = 0.0
    if drr_db is None:
        drr_db = 10 * np.log10(0.5 / rt60_s)
    h *= np.sqrt(10 ** (-drr_db / 10) / np.sum(h**2))  # tail energy relative to the unit direct path
    h[0] = 1.0
    return h


def reverberate(
    speech: np.ndarray, rt60_s: float, sample_rate: int, seed: int, drr_db: float | None = None
) -> np.ndarray:
    """Speech convolved with a synthetic RIR, cut to the input length, at the input's active level."""
    from scipy.signal import fftconvolve

    s = np.asarray(speech, dtype=np.float64)
    y = fftconvolve(s, room_impulse_response(rt60_s, sample_rate, seed, drr_db))[: s.size]
    y *= np.sqrt(active_power(s, sample_rate) / max(active_power(y, sample_rate), 1e-20))
    peak = float(np.abs(y).max())
    if peak > 0.99:
        y *= 0.99 / peak
    return y.astype(np.float32)

"""Audio loading, resampling and validation shared by the corpus, BYO data and the evaluators."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")

# Validation thresholds (documented so that a user knows why a file was refused).
MIN_DURATION_S = 0.1
SILENCE_RMS = 1e-4  # -80 dBFS: below this the file carries no speech worth scoring
CLIPPED_SHARE = 0.01  # more than 1 % of samples at full scale: the file is clipped
FULL_SCALE = 0.999


class AudioError(Exception):
    """One unusable audio file; the message is the reason (one line)."""


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited polyphase resampling (Kaiser-windowed FIR) of a mono float signal."""
    if from_rate == to_rate:
        return np.asarray(audio, dtype=np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(int(to_rate), int(from_rate))
    out = resample_poly(np.asarray(audio, dtype=np.float64), ratio.numerator, ratio.denominator)
    return out.astype(np.float32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """[T] or [T, C] -> [T] by averaging channels (soundfile's layout is frames x channels)."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        return audio
    if audio.ndim == 2:
        return audio.mean(axis=1)
    raise AudioError(f"unexpected array shape {audio.shape}")


def validate(audio: np.ndarray, sample_rate: int) -> None:
    """Raise AudioError with the reason when ``audio`` must not be scored."""
    if audio.size == 0:
        raise AudioError("empty (no samples)")
    if not np.all(np.isfinite(audio)):
        bad = int((~np.isfinite(audio)).sum())
        raise AudioError(f"{bad} NaN/inf samples")
    duration = audio.size / sample_rate
    if duration < MIN_DURATION_S:
        raise AudioError(f"too short ({duration * 1000:.0f} ms < {MIN_DURATION_S * 1000:.0f} ms)")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms < SILENCE_RMS:
        level = -math.inf if rms == 0 else 20 * math.log10(rms)
        raise AudioError(f"silent (RMS {level:.1f} dBFS)")
    clipped = float(np.mean(np.abs(audio) >= FULL_SCALE))
    if clipped > CLIPPED_SHARE:
        raise AudioError(f"clipped ({clipped * 100:.1f} % of samples at full scale)")


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read any rate/channel count via soundfile, downmix, resample, validate. Raises AudioError."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError("file not found")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=False)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError for bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AudioError(f"unreadable audio ({msg})") from None
    audio = to_mono(audio)
    # Validate at the native rate: resampling would smear NaNs and clipping.
    validate(audio, rate)
    return resample(audio.astype(np.float32), rate, sample_rate)


def dither(audio: np.ndarray, seed: int, level: float = 1e-5) -> np.ndarray:
    """Add seeded Gaussian noise (-100 dBFS): espeak leaves exact-zero silence, which breaks log-spectra."""
    rng = np.random.default_rng(seed)
    return (audio + level * rng.standard_normal(audio.shape)).astype(np.float32)


def active_power(
    audio: np.ndarray, sample_rate: int, frame_ms: float = 20.0, floor_db: float = 40.0
) -> float:
    """Mean power of the active (speech) frames: frames within ``floor_db`` of the loudest frame.

    Used for SNR mixing so that pauses in an utterance do not lower its "speech power" (a simplified
    ITU-T P.56 active level: energy threshold relative to the peak frame instead of an adaptive one).
    """
    x = np.asarray(audio, dtype=np.float64)
    hop = max(1, int(sample_rate * frame_ms / 1000))
    n = x.size // hop
    if n == 0:
        return float(np.mean(x**2)) if x.size else 0.0
    frames = x[: n * hop].reshape(n, hop)
    power = np.mean(frames**2, axis=1)
    peak = float(power.max())
    if peak <= 0:
        return 0.0
    active = power >= peak * 10 ** (-floor_db / 10)
    return float(power[active].mean())

"""STOI and extended STOI (intelligibility, 0..1) with pystoi (which resamples to 10 kHz itself).

STOI compares short-time envelopes frame by frame without aligning the signals: callers must pass
time-aligned signals (see ``vemi_eval.data.audio.align``).
"""

from __future__ import annotations

import warnings

import numpy as np

from . import EvaluatorError, EvaluatorSpec

SPEC = EvaluatorSpec(
    name="stoi", package="pystoi", needs_reference=True, needs_transcript=False, sample_rate=None
)


def _stoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int, extended: bool) -> float:
    try:
        from pystoi import stoi as _pystoi
    except ImportError as e:
        raise EvaluatorError(f"pystoi is not installed ({e})") from None
    ref = np.asarray(reference, dtype=np.float64)
    deg = np.asarray(degraded, dtype=np.float64)
    n = min(ref.size, deg.size)
    if not (np.all(np.isfinite(ref[:n])) and np.all(np.isfinite(deg[:n]))):
        raise EvaluatorError("STOI input has NaN/inf samples")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_pystoi(ref[:n], deg[:n], sample_rate, extended=extended))
    # pystoi warns and returns 1e-5 when fewer than 30 speech frames remain: that is no score.
    for w in caught:
        if "Not enough STFT frames" in str(w.message):
            raise EvaluatorError(f"{'ESTOI' if extended else 'STOI'}: {str(w.message).splitlines()[0]}")
    if not np.isfinite(value):
        raise EvaluatorError(f"{'ESTOI' if extended else 'STOI'} returned {value}")
    return value


def stoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    return _stoi(reference, degraded, sample_rate, extended=False)


def estoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    return _stoi(reference, degraded, sample_rate, extended=True)

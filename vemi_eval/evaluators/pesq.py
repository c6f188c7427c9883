"""PESQ (ITU-T P.862) with the ``pesq`` package: wide band (16 kHz, P.862.2) and narrow band (8 kHz).

Inputs at any rate are resampled to 16 / 8 kHz. PESQ aligns the two signals itself. A failure of the
scorer (no utterance found, buffer too short...) raises EvaluatorError: never a default score (some
toolkits return 1.0 on error, which reads as "terrible quality" instead of "not measured").

Long inputs: the ``pesq`` C extension crashes the process (SIGSEGV) on inputs of a few minutes (it scores
120 s, and segfaults at 300 s), so an input longer than ``SEGMENT_S`` is scored in consecutive segments of
at most that length and the score is their duration-weighted mean; a segment without speech (PESQ finds
no utterance) is left out, and if none holds speech the call fails. The record's evaluator says so.
"""

from __future__ import annotations

import numpy as np

from ..data.audio import resample
from . import EvaluatorError, EvaluatorSpec

SEGMENT_S = 30.0  # the longest input handed to the C extension in one call

SPEC = EvaluatorSpec(
    name="pesq",
    package="pesq",
    needs_reference=True,
    needs_transcript=False,
    sample_rate=16000,
    method=f"inputs over {SEGMENT_S:g} s: consecutive segments of at most {SEGMENT_S:g} s, duration-weighted "
    "mean over the segments with speech",
)

MODES = {"wb": 16000, "nb": 8000}


def pesq(reference: np.ndarray, degraded: np.ndarray, sample_rate: int, mode: str = "wb") -> float:
    """MOS-LQO of ``degraded`` against ``reference`` (-0.5..4.64 WB, ..4.55 NB)."""
    if mode not in MODES:
        raise EvaluatorError(f"unknown PESQ mode {mode!r} (expected 'wb' or 'nb')")
    try:
        import numpy  # noqa: F401  (pesq needs numpy at run time without declaring it)
        from pesq import PesqError
        from pesq import pesq as _pesq
    except ImportError as e:
        raise EvaluatorError(f"pesq is not installed ({e})") from None
    rate = MODES[mode]
    ref = resample(np.asarray(reference, dtype=np.float32), sample_rate, rate).astype(np.float64)
    deg = resample(np.asarray(degraded, dtype=np.float32), sample_rate, rate).astype(np.float64)
    n = min(ref.size, deg.size)
    if n < rate // 4:
        raise EvaluatorError(f"PESQ needs at least 0.25 s of audio, got {n / rate:.3f} s")
    if not (np.all(np.isfinite(ref[:n])) and np.all(np.isfinite(deg[:n]))):
        raise EvaluatorError("PESQ input has NaN/inf samples")

    def one(a: int, b: int) -> float:
        try:
            return float(_pesq(rate, ref[a:b], deg[a:b], mode))
        except PesqError as e:
            raise EvaluatorError(f"PESQ-{mode.upper()} failed: {type(e).__name__}: {e}") from None
        except Exception as e:
            raise EvaluatorError(f"PESQ-{mode.upper()} failed: {type(e).__name__}: {e}") from None

    seg = int(SEGMENT_S * rate)
    if n <= seg:
        return one(0, n)
    scores, weights, errors = [], [], []
    for a in range(0, n, seg):
        b = min(n, a + seg)
        if b - a < rate // 4:  # a tail too short to score: the segment before covers the input
            continue
        try:
            scores.append(one(a, b))
            weights.append(b - a)
        except EvaluatorError as e:  # a segment of silence: no utterance to score
            errors.append(str(e))
    if not scores:
        raise EvaluatorError(f"PESQ-{mode.upper()} failed on every {SEGMENT_S:g} s segment: {errors[0]}")
    return float(np.average(scores, weights=weights))


def pesq_wb(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    return pesq(reference, degraded, sample_rate, "wb")


def pesq_nb(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    return pesq(reference, degraded, sample_rate, "nb")

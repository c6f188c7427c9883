"""Scale-invariant signal-to-distortion ratio (Le Roux et al. 2019), in dB.

Means are removed; the reference is scaled by the optimal gain. Not alignment-invariant: callers pass
time-aligned signals (see ``vemi_eval.data.audio.align``). Computed here with numpy (no package).
"""

from __future__ import annotations

import math

import numpy as np

from . import EvaluatorError, EvaluatorSpec

SPEC = EvaluatorSpec(
    name="sisdr", package="numpy", needs_reference=True, needs_transcript=False, sample_rate=None
)


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    n = min(ref.size, est.size)
    if n == 0:
        raise EvaluatorError("SI-SDR of empty signals")
    ref = ref[:n] - ref[:n].mean()
    est = est[:n] - est[:n].mean()
    energy = float(ref @ ref)
    if energy <= 0 or not math.isfinite(energy):
        raise EvaluatorError("SI-SDR: the reference is silent or non-finite")
    target = (float(est @ ref) / energy) * ref
    noise = est - target
    t, e = float(target @ target), float(noise @ noise)
    if not (math.isfinite(t) and math.isfinite(e)):
        raise EvaluatorError("SI-SDR: non-finite estimate")
    if e == 0:
        raise EvaluatorError("SI-SDR is infinite (estimate identical to the scaled reference)")
    if t == 0:
        raise EvaluatorError("SI-SDR: the estimate is orthogonal to the reference (silent target)")
    return 10 * math.log10(t / e)

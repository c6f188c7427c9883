"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS, no reference needed, with the ONNX models that
``speechmos`` ships. 16 kHz only: inputs are resampled. Clips shorter than 9.01 s are tiled to that length
by speechmos (its DNSMOS window), which is how the reference implementation scores short clips.
"""

from __future__ import annotations

import numpy as np

from ..data.audio import resample
from . import EvaluatorError, EvaluatorSpec, load_once, package_file

SAMPLE_RATE = 16000


def _weights() -> list:
    return [
        package_file("speechmos", "dnsmos_models", "sig_bak_ovr.onnx"),
        package_file("speechmos", "dnsmos_models", "model_v8.onnx"),
    ]


SPEC = EvaluatorSpec(
    name="dnsmos",
    package="speechmos",
    needs_reference=False,
    needs_transcript=False,
    sample_rate=SAMPLE_RATE,
    weights=_weights,
)


def load_model(threads: int = 1):
    """speechmos' DNSMOS with ONNX sessions limited to ``threads`` (its own would take every core)."""
    return _load_model(threads)


@load_once
def _load_model(threads: int):
    try:
        import onnxruntime as ort
        from speechmos.dnsmos import DNSMOS
    except ImportError as e:
        raise EvaluatorError(f"DNSMOS needs speechmos, onnxruntime and librosa ({e})") from None
    primary, p808 = _weights()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    model = DNSMOS.__new__(DNSMOS)
    model.primary_model_path = str(primary)
    model.onnx_sess = ort.InferenceSession(str(primary), opts, providers=["CPUExecutionProvider"])
    model.p808_onnx_sess = ort.InferenceSession(str(p808), opts, providers=["CPUExecutionProvider"])
    return model


def dnsmos(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """{"ovrl", "sig", "bak", "p808"} MOS (1..5) of one clip."""
    x = resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
    if x.size < SAMPLE_RATE // 4:
        raise EvaluatorError(f"DNSMOS needs at least 0.25 s of audio, got {x.size / SAMPLE_RATE:.3f} s")
    if not np.all(np.isfinite(x)):
        raise EvaluatorError("DNSMOS input has NaN/inf samples")
    peak = float(np.abs(x).max())
    if peak > 1:
        raise EvaluatorError(f"DNSMOS input exceeds full scale (peak {peak:.2f})")
    model = load_model()
    try:
        out = model(x, SAMPLE_RATE, False)
    except Exception as e:
        raise EvaluatorError(f"DNSMOS failed: {type(e).__name__}: {e}") from None
    res = {"ovrl": out["ovrl_mos"], "sig": out["sig_mos"], "bak": out["bak_mos"], "p808": out["p808_mos"]}
    res = {k: float(v) for k, v in res.items()}
    if not all(np.isfinite(v) for v in res.values()):
        raise EvaluatorError(f"DNSMOS returned non-finite scores {res}")
    return res

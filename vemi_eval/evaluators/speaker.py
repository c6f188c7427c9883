"""Speaker similarity with resemblyzer's GE2E encoder (it ships pretrained.pt, offline).

``embed`` gives a unit-norm 256-d embedding (audio resampled to 16 kHz, volume normalised and long
silences trimmed as resemblyzer's own preprocessing does); similarity is the cosine of two embeddings.
``eer`` is the speaker-verification equal error rate of trial scores.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..data.audio import resample
from . import EvaluatorError, EvaluatorSpec, load_once, package_file

SAMPLE_RATE = 16000
MIN_SPEECH_S = 0.3  # less speech than this after silence trimming gives no usable embedding


def _weights() -> list:
    return [package_file("resemblyzer", "pretrained.pt")]


SPEC = EvaluatorSpec(
    name="speaker",
    package="Resemblyzer",
    needs_reference=True,
    needs_transcript=False,
    sample_rate=SAMPLE_RATE,
    weights=_weights,
)


def _import_resemblyzer():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # webrtcvad imports pkg_resources (deprecated)
            from resemblyzer import VoiceEncoder
            from resemblyzer.audio import normalize_volume, trim_long_silences
            from resemblyzer.hparams import audio_norm_target_dBFS
    except ImportError as e:
        raise EvaluatorError(f"resemblyzer is not installed or webrtcvad needs setuptools<81 ({e})") from None
    return VoiceEncoder, normalize_volume, trim_long_silences, audio_norm_target_dBFS


@load_once
def load_encoder():
    """resemblyzer's GE2E encoder on its shipped weights, loaded once."""
    VoiceEncoder = _import_resemblyzer()[0]
    return VoiceEncoder("cpu", verbose=False, weights_fpath=_weights()[0])


def embed(audio: np.ndarray, sample_rate: int, *, trim: bool = True) -> np.ndarray:
    """Unit-norm speaker embedding of one utterance."""
    _, normalize_volume, trim_long_silences, target_dbfs = _import_resemblyzer()
    x = resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise EvaluatorError("speaker embedding input is empty or has NaN/inf samples")
    x = normalize_volume(x, target_dbfs, increase_only=True)
    if trim:
        x = trim_long_silences(np.clip(x, -1, 1))
    if x.size < MIN_SPEECH_S * SAMPLE_RATE:
        raise EvaluatorError(f"only {x.size / SAMPLE_RATE:.2f} s of speech found (need {MIN_SPEECH_S} s)")
    e = load_encoder().embed_utterance(x.astype(np.float32))
    if not np.all(np.isfinite(e)):
        raise EvaluatorError("speaker embedding is non-finite")
    return e


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def eer(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold: where false acceptance = false rejection (interpolated).

    ``scores`` are trial similarities, ``same`` True for target (same-speaker) trials.
    """
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if same.all() or not same.any():
        raise EvaluatorError("EER needs both same-speaker and different-speaker trials")
    # accept a trial when score >= t; the extra threshold above every score accepts nothing (far 0, frr 1)
    thresholds = np.append(np.unique(scores), np.inf)
    far = np.array([np.mean(scores[~same] >= t) for t in thresholds])  # falls from 1 to 0
    frr = np.array([np.mean(scores[same] < t) for t in thresholds])  # rises from 0 to 1
    k = int(np.argmax(far <= frr))  # first threshold where the curves have crossed
    if k == 0:
        return float((far[0] + frr[0]) / 2), float(thresholds[0])
    d0, d1 = far[k - 1] - frr[k - 1], far[k] - frr[k]
    w = d0 / (d0 - d1)
    upper = thresholds[k] if np.isfinite(thresholds[k]) else thresholds[k - 1]
    return float(far[k - 1] + w * (far[k] - far[k - 1])), float(
        thresholds[k - 1] + w * (upper - thresholds[k - 1])
    )

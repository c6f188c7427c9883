"""Full-Duplex-Bench v1.5's ``general_before_after``: how the model's speech changes across an overlap (the
user interrupts, backchannels, talks to someone else, or background speech plays), from its output before
and after the overlap ends, without a judge.

Definitions taken (not code) from ``v1_v1.5/evaluation/eval_general_before_after.py``
(github.com/DanielLin94144/Full-Duplex-Bench):

- the output splits at a word boundary: the start of the first ASR word still going at, or starting after,
  the overlap's end (``metadata.json`` ``timestamps[1]``), else the last word's end; words ending by the
  split are "before", the others "after";
- per part, speaking rate = its words / (last word's end - first word's start) in words per minute, and
  on the part's speech (silence trimmed: here Silero VAD's spans, FDB's ``--trim_mode silero``, cut
  together): sudden cutoffs (30 ms frames whose level falls >= 18 dB from the frame before, which stood
  >= 6 dB above the 10th percentile of the last 30 frames), mean and standard deviation of the level
  (dB of the RMS of 10 ms frames) and of F0 over voiced frames (pYIN, 50-600 Hz, 10 ms hop: FDB's second
  pitch backend; its first, Praat, is not installed here; a frame is voiced at a voicing probability
  >= 0.5, as Praat leaves weakly periodic frames unvoiced).

Its SQuIM and UTMOSv2 scores need weights downloaded at run time: not measured. A part with no speech
has no measure (None): the statistics are taken given speech in the part, never as 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.text_stream import TimedWord

RATE = 16000  # FDB scores at 16 kHz
CUTOFF_FRAME_S = 0.03
CUTOFF_DROP_DB = -18.0
CUTOFF_MARGIN_DB = 6.0
CUTOFF_HISTORY = 30
LEVEL_FRAME_S = 0.01
PITCH_MIN_HZ, PITCH_MAX_HZ = 50.0, 600.0
MIN_VOICED_PROB = 0.5  # pYIN's voicing probability a frame needs to count as voiced
EPS = 1e-10

# measure -> unit (the records' metric names)
MEASURES = {
    "speaking_rate_wpm": "words/min",
    "sudden_cutoffs": "count",
    "level_mean_db": "dB",
    "level_std_db": "dB",
    "pitch_mean_hz": "Hz",
    "pitch_std_hz": "Hz",
}


@dataclass(frozen=True)
class PartMeasures:
    """One part's measures; each None when the part holds no speech (or, for pitch, no voiced frame)."""

    speaking_rate_wpm: float | None = None
    sudden_cutoffs: float | None = None
    level_mean_db: float | None = None
    level_std_db: float | None = None
    pitch_mean_hz: float | None = None
    pitch_std_hz: float | None = None


@dataclass(frozen=True)
class BeforeAfter:
    split_s: float
    before: PartMeasures
    after: PartMeasures


def split_time(words: Sequence[TimedWord], overlap_end: float) -> float:
    """FDB's word-aligned split: the start of the first word still going at or starting after the
    overlap's end; with none, the last word's end; with no word at all, the overlap's end."""
    spans = sorted((w.start, w.end) for w in words)
    if not spans:
        return overlap_end
    for a, b in spans:
        if overlap_end < a or a <= overlap_end < b:
            return a
    return spans[-1][1]


def speaking_rate(words: Sequence[TimedWord]) -> float | None:
    if not words:
        return None
    span = max(w.end for w in words) - min(w.start for w in words)
    return len(words) / (span / 60.0) if span > 0 else None


def sudden_cutoffs(x: np.ndarray, sr: int) -> int:
    """Frames where the level falls by >= 18 dB from a frame that stood well above the recent floor."""
    hop = int(sr * CUTOFF_FRAME_S)
    if hop <= 0 or x.size < 2 * hop:
        return 0
    history: deque[float] = deque(maxlen=CUTOFF_HISTORY)
    prev = _db(x[:hop])
    count = 0
    for i in range(1, x.size // hop):
        cur = _db(x[i * hop : (i + 1) * hop])
        history.append(cur)
        if cur - prev <= CUTOFF_DROP_DB and prev >= float(np.percentile(history, 10)) + CUTOFF_MARGIN_DB:
            count += 1
        prev = cur
    return count


def level_stats(x: np.ndarray, sr: int) -> tuple[float, float]:
    hop = max(1, int(round(sr * LEVEL_FRAME_S)))
    frames = [x[s : s + hop].astype(np.float64) for s in range(0, x.size, hop)]
    db = np.array([20 * np.log10(np.sqrt(np.mean(f * f) + EPS)) for f in frames if f.size])
    return float(db.mean()), float(db.std(ddof=1)) if db.size > 1 else 0.0


def pitch_stats(x: np.ndarray, sr: int) -> tuple[float | None, float | None]:
    import librosa

    hop = max(1, int(round(sr * LEVEL_FRAME_S)))
    if x.size < 4 * hop:
        return None, None
    f0, _, prob = librosa.pyin(
        x.astype(np.float32), fmin=PITCH_MIN_HZ, fmax=PITCH_MAX_HZ, sr=sr, hop_length=hop
    )
    # pYIN's voicing path can hold a frame "voiced" at a probability of 0.01 (the tiny codec's speech: every
    # such frame at the 50 Hz floor); Praat, FDB's first backend, calls weakly periodic frames unvoiced
    voiced = f0[np.isfinite(f0) & (f0 > 0) & (f0 <= PITCH_MAX_HZ) & (prob >= MIN_VOICED_PROB)]
    if voiced.size == 0:
        return None, None
    return float(voiced.mean()), float(voiced.std(ddof=1)) if voiced.size > 1 else 0.0


def part_measures(
    audio: np.ndarray, sr: int, words: Sequence[TimedWord], speech: Sequence[tuple[float, float]]
) -> PartMeasures:
    """The measures of one part: ``audio`` the part, ``speech`` its speech spans (s, within the part)."""
    rate = speaking_rate(words)
    pieces = [audio[int(a * sr) : int(b * sr)] for a, b in speech]
    voiced = np.concatenate([p for p in pieces if p.size]) if any(p.size for p in pieces) else np.zeros(0)
    if voiced.size == 0:
        return PartMeasures(speaking_rate_wpm=rate)
    lm, ls = level_stats(voiced, sr)
    pm, ps = pitch_stats(voiced, sr)
    return PartMeasures(rate, float(sudden_cutoffs(voiced, sr)), lm, ls, pm, ps)


def before_after(
    audio: np.ndarray,
    sr: int,
    words: Sequence[TimedWord],
    speech: Sequence[tuple[float, float]],
    overlap_end: float,
) -> BeforeAfter:
    """The output (``audio`` at ``sr``, its ASR ``words`` and VAD ``speech`` spans, in seconds) split at
    FDB's word boundary after the overlap, each part measured on its own."""
    from ..data.audio import resample

    x = resample(np.asarray(audio, np.float32), sr, RATE)
    t = min(max(0.0, split_time(words, overlap_end)), x.size / RATE)
    cut = int(round(t * RATE))

    def spans(lo: float, hi: float) -> list[tuple[float, float]]:
        return [(max(a, lo) - lo, min(b, hi) - lo) for a, b in speech if min(b, hi) > max(a, lo)]

    end = x.size / RATE
    before = [w for w in words if w.end <= t]
    after = [w for w in words if w.end > t]
    return BeforeAfter(
        t,
        part_measures(x[:cut], RATE, before, spans(0.0, t)),
        part_measures(x[cut:], RATE, after, spans(t, end)),
    )


def _db(block: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(block, dtype=np.float64))) + EPS))

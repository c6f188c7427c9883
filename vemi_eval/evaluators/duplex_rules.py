"""Turn-taking rules of the full-duplex benchmarks, each beside ours, as pure functions of timed words.

Definitions taken (not code) from:

- **fdb**, Full-Duplex-Bench v1/v1.5 (github.com/DanielLin94144/Full-Duplex-Bench), ``v1_v1.5/evaluation/``:
  ``eval_smooth_turn_taking.py``, ``eval_pause_handling.py``, ``eval_user_interruption.py``: the model
  takes the turn when its output words (ASR of the whole ``output.wav``; for an interruption, of the audio
  after the interruption ends, ``get_transcript/asr.py --task user_interruption``) span >= 1 s, or are
  shorter but more than 3 words. Latency = start of the first output word - the user's turn end (the
  interruption's end), clipped at 0 and counted only where the turn was taken. Pause TOR is taken over
  the whole output, not a window. ``eval_backchannel.py``: Silero VAD segments of the output; a segment
  over 3 s is a take-over; a shorter one is a take-over with more than 3 words in it, or when it lasts
  >= 1 s or holds more than 2 words (the last segment's verdict stands, as its loop leaves it);
  frequency = short segments (those before the first > 3 s one) per second of output; JSD = scipy's
  ``jensenshannon`` (the distance, base e) between the segments' 200 ms histogram and the reference
  distribution resampled to its length by linear interpolation, 1 when there is no segment.
- **m3**, M3-DuplexBench (github.com/nttcslab-sp/m3-duplexbench),
  ``m3_duplexbench/evaluation/dimensions/timing.py``: on the model's speech *segments* (ASR segments with
  their words). A segment is a backchannel when shorter than 1 s with fewer than 4 words. Smooth turn:
  among segments ending after the user's turn end and starting no earlier than 0.4 s before it (short
  utterances count), the one starting closest to the turn end; latency = its start - the turn end (not
  clipped: down to -0.4 s). Pause: a non-backchannel segment overlapping the pause is a take-over.
  Stop latency after a user's backchannel or barge-in at t: the first segment starting before t + 0.5 s
  (of those still going at t: M3 transcribes the output from the event on); its end - t (not scored when
  the model was not speaking).
- **vemi** (ours): only what the model says after the user's turn ends counts (a greeting, or words
  while the user still talks, are neither a response nor its latency); the model responds when any word
  starts in [turn end, window end); latency = that word's start - the turn end. Our corpus's answers are
  one word, so a size rule cannot tell an answer from a backchannel: any word is a response. Pause: any
  word starting inside the pause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.text_stream import TimedWord

FDB_TURN_MIN_S = 1.0  # output spanning this long takes the turn...
FDB_TURN_MAX_SHORT_WORDS = 3  # ...or, when shorter, more than this many words
FDB_BC_MAX_SEGMENT_S = 3.0  # a VAD segment longer than this is the model speaking formally
FDB_BC_SHORT_MAX_WORDS = 2  # a segment under 1 s with at most 2 words is a backchannel
FDB_BC_BIN_S = 0.2  # histogram bin of the backchannel distribution
FDB_BC_EPSILON = 1e-10
M3_MAX_OVERLAP_S = 0.4
M3_BC_MAX_S = 1.0  # a segment shorter than this with fewer than M3_BC_MIN_WORDS words is a backchannel
M3_BC_MIN_WORDS = 4
M3_SHORT_PAUSE_S = 0.5  # stop latency: a segment starting up to this long after the event counts


@dataclass(frozen=True)
class Segment:
    """A stretch of the model's speech (between silences) with the words said in it."""

    start: float
    end: float
    words: tuple[TimedWord, ...]


@dataclass(frozen=True)
class TurnScore:
    taken: bool
    latency_s: float | None  # None where the turn was not taken


@dataclass(frozen=True)
class BackchannelScore:
    take_over: bool
    frequency_hz: float  # backchannel segments per second of output
    jsd: float | None  # None without a reference distribution


# --- Full-Duplex-Bench -------------------------------------------------------------------------------
def fdb_takes_turn(words: Sequence[TimedWord]) -> bool:
    if not words:
        return False
    span = words[-1].end - words[0].start
    return span >= FDB_TURN_MIN_S or len(words) > FDB_TURN_MAX_SHORT_WORDS


def fdb_smooth_turn(words: Sequence[TimedWord], turn_end: float) -> TurnScore:
    """Over the whole output: a greeting before the turn end counts, and clips the latency to 0."""
    if not fdb_takes_turn(words):
        return TurnScore(False, None)
    return TurnScore(True, max(0.0, words[0].start - turn_end))


def fdb_pause(words: Sequence[TimedWord]) -> bool:
    return fdb_takes_turn(words)


def fdb_after(words: Sequence[TimedWord], t: float) -> list[TimedWord]:
    """The words FDB's ASR sees when it transcribes the output from ``t`` on (an interruption's end)."""
    return [w for w in words if w.start >= t]


def fdb_interruption(words: Sequence[TimedWord], interrupt_end: float) -> TurnScore:
    return fdb_smooth_turn(fdb_after(words, interrupt_end), interrupt_end)


def fdb_backchannel(
    vad: Sequence[tuple[float, float]],
    words: Sequence[TimedWord],
    duration_s: float,
    reference: Sequence[float] | None = None,
) -> BackchannelScore:
    take_over, short = False, []
    for a, b in vad:
        if b - a > FDB_BC_MAX_SEGMENT_S:
            take_over = True
            break
        n = sum(1 for w in words if _fdb_overlaps(w, a, b))
        take_over = n > FDB_TURN_MAX_SHORT_WORDS or b - a >= FDB_TURN_MIN_S or n > FDB_BC_SHORT_MAX_WORDS
        short.append((a, b))
    freq = len(short) / duration_s if duration_s > 0 else 0.0
    if reference is None:
        return BackchannelScore(take_over, freq, None)
    if not short:
        return BackchannelScore(take_over, freq, 1.0)
    from scipy.spatial.distance import jensenshannon

    hist = np.zeros(int(duration_s / FDB_BC_BIN_S) + 1)
    for a, b in short:
        hist[int(a / FDB_BC_BIN_S) : int(b / FDB_BC_BIN_S) + 1] += 1
    hist = (hist + FDB_BC_EPSILON) / np.sum(hist + FDB_BC_EPSILON)
    ref = np.asarray(reference, np.float64)
    ref = np.interp(np.linspace(0, 1, hist.size), np.linspace(0, 1, ref.size), ref)
    return BackchannelScore(take_over, freq, float(jensenshannon(hist, ref)))


def _fdb_overlaps(w: TimedWord, a: float, b: float) -> bool:
    """eval_backchannel.py's test of a word against a VAD segment [a, b]."""
    return (w.start >= a and w.end <= b) or (w.start <= b and w.end > b) or (w.start <= a and w.end > a)


# --- M3-DuplexBench ----------------------------------------------------------------------------------
def m3_is_backchannel(seg: Segment, max_s: float = M3_BC_MAX_S, min_words: int = M3_BC_MIN_WORDS) -> bool:
    return seg.end - seg.start < max_s and len(seg.words) < min_words


def m3_smooth_turn(segments: Sequence[Segment], turn_end: float) -> TurnScore:
    """M3's SmoothTurnTakingEvaluator with allow_short_utterance (its default): no segment is a
    backchannel here."""
    cands = [s for s in segments if s.end > turn_end and s.start >= turn_end - M3_MAX_OVERLAP_S]
    if not cands:
        return TurnScore(False, None)
    best = min(cands, key=lambda s: abs(s.start - turn_end))
    return TurnScore(True, best.start - turn_end)


def m3_pause(segments: Sequence[Segment], start: float, end: float) -> bool:
    return any(s.end > start and s.start < end and not m3_is_backchannel(s) for s in segments)


def m3_stop_latency(segments: Sequence[Segment], t: float) -> float | None:
    """M3 transcribes only the output from the event on, so a segment that ended before ``t`` is not
    there; on a whole conversation's output those are left out here."""
    cands = [s for s in segments if s.start < t + M3_SHORT_PAUSE_S and s.end > t]
    if not cands:
        return None
    return min(cands, key=lambda s: s.start).end - t


# --- ours --------------------------------------------------------------------------------------------
def vemi_response(words: Sequence[TimedWord], turn_end: float, window_end: float) -> TurnScore:
    for w in words:
        if turn_end <= w.start < window_end:
            return TurnScore(True, w.start - turn_end)
    return TurnScore(False, None)


def vemi_pause(words: Sequence[TimedWord], start: float, end: float) -> bool:
    return any(start <= w.start < end for w in words)

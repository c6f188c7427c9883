"""FDB v1.5's general_before_after without a judge (evaluators/overlap_split.py): the word-aligned split,
and each part's measures on signals whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from vemi_eval.data.text_stream import TimedWord
from vemi_eval.evaluators import overlap_split as ob

SR = ob.RATE


def words(*spans: tuple[float, float]) -> list[TimedWord]:
    return [TimedWord(f"w{i}", a, b) for i, (a, b) in enumerate(spans)]


def test_the_split_is_at_a_word_boundary_as_fdb_chooses_it() -> None:
    ws = words((0.1, 0.5), (0.6, 1.0), (1.8, 2.2))
    assert ob.split_time(ws, 1.2) == 1.8  # the first word starting after the overlap's end
    assert ob.split_time(ws, 0.8) == 0.6  # a word still going at the overlap's end starts the "after"
    assert ob.split_time(ws, 3.0) == 2.2  # none after: the last word's end
    assert ob.split_time([], 1.2) == 1.2


def test_speaking_rate_is_words_per_minute_of_their_span() -> None:
    assert ob.speaking_rate(words((0.0, 0.5), (0.5, 1.0), (1.0, 1.5))) == pytest.approx(120.0)
    assert ob.speaking_rate([]) is None


def tone(seconds: float, amp: float, hz: float = 200.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_a_sudden_stop_is_a_cutoff_and_a_fade_is_not() -> None:
    # syllables that fade out (a Hann envelope) over a room-noise floor, then one cut off at full level
    rng = np.random.default_rng(0)

    def floor(seconds: float) -> np.ndarray:
        return (0.01 * rng.standard_normal(int(seconds * SR))).astype(np.float32)

    def syllable() -> np.ndarray:
        x = tone(0.3, 0.5)
        return x * np.hanning(x.size).astype(np.float32)

    faded = np.concatenate([floor(0.2)] + [np.concatenate([syllable(), floor(0.15)]) for _ in range(4)])
    cut = tone(0.3, 0.5)
    cut[: cut.size // 2] *= np.hanning(cut.size)[: cut.size // 2].astype(np.float32)
    assert ob.sudden_cutoffs(faded, SR) == 0
    assert ob.sudden_cutoffs(np.concatenate([faded, cut, floor(0.3)]), SR) == 1
    # a steady tone is its own floor: its stop is no drop from above the floor (FDB's rule)
    assert ob.sudden_cutoffs(np.concatenate([tone(1.0, 0.5), floor(0.5)]), SR) == 0


def test_level_and_pitch_of_a_steady_tone() -> None:
    x = tone(1.0, 0.5, 180.0)
    mean_db, std_db = ob.level_stats(x, SR)
    assert mean_db == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.2) and std_db < 0.5
    f0, f0_std = ob.pitch_stats(x, SR)
    assert f0 == pytest.approx(180.0, rel=0.03) and f0_std < 5
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    assert ob.pitch_stats(noise, SR) == (None, None)  # no periodic frame: no pitch, not the 50 Hz floor


def test_each_part_is_measured_on_its_own_and_a_silent_part_has_no_measure() -> None:
    x = np.concatenate([tone(1.0, 0.5, 150.0), np.zeros(SR, np.float32)])
    ws = words((0.1, 0.4), (0.4, 0.7), (0.7, 1.0))
    ba = ob.before_after(x, SR, ws, [(0.0, 1.0)], overlap_end=1.2)
    assert ba.split_s == 1.0  # no word after the overlap: the last word's end
    assert ba.before.speaking_rate_wpm == pytest.approx(3 / (0.9 / 60))
    assert ba.before.pitch_mean_hz == pytest.approx(150.0, rel=0.03)
    assert ba.after == ob.PartMeasures()  # no speech after the split: every measure None, none 0

"""The espeak-ng corpus: distinct speakers, disjoint splits, determinism, caching, resampling, dither."""

from __future__ import annotations

import numpy as np
import pytest

from vemi_eval.data import DataError
from vemi_eval.data import corpus as C


def test_splits_are_disjoint_in_speakers_and_sentences():
    train, held = C.split_items("train"), C.split_items("heldout")
    assert {s.id for s, _ in train}.isdisjoint({s.id for s, _ in held})
    assert {i for _, i in train}.isdisjoint({i for _, i in held})
    assert len(C.SPEAKERS) >= 8 and len({s.voice for s in C.SPEAKERS}) == len(C.SPEAKERS)
    assert len(set(C.SENTENCES)) == len(C.SENTENCES) >= 40
    assert len(C.split_items("all")) == len(C.SPEAKERS) * len(C.SENTENCES)
    with pytest.raises(DataError, match="unknown corpus split"):
        C.split_items("dev")


def test_quick_heldout_is_deterministic_cached_and_resampled(tmp_path):
    a = C.espeak_corpus("heldout", quick=True, sample_rate=16000, cache_dir=tmp_path)
    cached = sorted(p.name for p in next(tmp_path.iterdir()).glob("*.npy"))
    b = C.espeak_corpus("heldout", quick=True, sample_rate=16000, cache_dir=tmp_path)
    assert len(a) == C.HELDOUT_SPEAKERS * C.QUICK_SENTENCES
    assert len(cached) == len(a)  # synthesised once, at the native rate
    assert C.corpus_sha256(a) == C.corpus_sha256(b)
    u = a[0]
    native = np.load(next(tmp_path.iterdir()) / f"{u.id}.npy")
    assert u.sample_rate == 16000 and u.audio.dtype == np.float32
    assert abs(u.audio.size - native.size * 16000 / C.NATIVE_RATE) <= 1
    assert np.count_nonzero(native == 0) > 100  # espeak leaves digital silence...
    assert np.count_nonzero(u.audio == 0) == 0  # ...which the dither removes
    rms_db = 20 * np.log10(np.sqrt(np.mean(u.audio.astype(np.float64) ** 2)))
    assert abs(rms_db - C.TARGET_RMS_DB) < 1.5
    assert {x.speaker for x in a} == {s.id for s in C.SPEAKERS[-C.HELDOUT_SPEAKERS :]}


def test_recipe_hash_covers_the_espeak_version():
    assert C.recipe_hash("eSpeak NG 1.51") != C.recipe_hash("eSpeak NG 1.52")
    assert C.recipe_hash() == C.recipe_hash()

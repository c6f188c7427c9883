"""The codec's training corpus: two engines, whole voices held out, deterministic, cached."""

from __future__ import annotations

import numpy as np
import pytest

from vemi_eval.data import DataError
from vemi_eval.data.codec_corpus import (
    FESTIVAL_VOICES,
    HELDOUT_VARIANTS,
    CorpusSize,
    codec_corpus,
    summary,
)
from vemi_eval.data.festival import FestivalVoice

SMALL = CorpusSize(espeak_train=6, festival_train_per_voice=1, espeak_heldout_per_variant=1,
                   festival_heldout_per_voice=1)  # fmt: skip


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cache = tmp_path_factory.mktemp("codec_corpus")
    train = codec_corpus("train", size=SMALL, cache_dir=cache, log=None)
    held = codec_corpus("heldout", size=SMALL, cache_dir=cache, log=None)
    return cache, train, held


def test_whole_voices_are_held_out(small):
    _, train, held = small
    train_voices = {(it["engine"], it["speaker"]) for it in train.items}
    held_voices = {(it["engine"], it["speaker"]) for it in held.items}
    assert not train_voices & held_voices
    assert {s for e, s in held_voices if e == "espeak"} == set(HELDOUT_VARIANTS)
    assert {s for e, s in held_voices if e == "festival"} == {v.name for v in FESTIVAL_VOICES if v.heldout}
    engines = summary(train)["voices"]
    assert engines["espeak"] >= 1 and engines["festival"] == sum(not v.heldout for v in FESTIVAL_VOICES)


def test_audio_is_normalised_speech_at_the_codec_rate(small):
    _, train, _ = small
    assert train.sample_rate == 24000
    for i in range(len(train)):
        a = train.utterance(i)
        assert a.dtype == np.float32 and a.size > 0.3 * 24000
        rms_db = 20 * np.log10(np.sqrt(np.mean(a.astype(np.float64) ** 2)))
        assert -30 < rms_db < -20 and np.abs(a).max() <= 1.0


def test_cached_and_deterministic(small, tmp_path, monkeypatch):
    import vemi_eval.data.codec_corpus as cc

    cache, train, _ = small
    again = codec_corpus("train", size=SMALL, cache_dir=cache, log=None)
    assert again.sha256 == train.sha256
    monkeypatch.setattr(cc, "FESTIVAL_VOICES", cc.FESTIVAL_VOICES[:2])  # fewer festival start-ups
    first = codec_corpus("train", size=SMALL, cache_dir=tmp_path / "a", log=None)
    rebuilt = codec_corpus("train", size=SMALL, cache_dir=tmp_path / "b", log=None)
    assert rebuilt.sha256 == first.sha256  # same recipe, built anew: same audio
    other = codec_corpus("train", size=SMALL, seed=1, cache_dir=tmp_path / "b", log=None)
    assert other.sha256 != first.sha256


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(DataError, match="split"):
        codec_corpus("test", size=SMALL, cache_dir=tmp_path, log=None)


def test_a_missing_festival_voice_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    """festival answers an unknown voice with SIOD ERROR and goes on in its default voice: that must
    not put another speaker (maybe a held-out one) into the corpus under the missing voice's name."""
    import vemi_eval.data.codec_corpus as cc

    monkeypatch.setattr(cc, "FESTIVAL_VOICES", (FestivalVoice("no_such_diphone", "en", "latin", False),))
    with pytest.raises(DataError, match="no_such_diphone"):
        codec_corpus("train", size=SMALL, cache_dir=tmp_path, log=None)


def test_every_espeak_base_keeps_its_variant():
    from vemi_eval.data.codec_corpus import ESPEAK_BASES
    from vemi_eval.data.dialogue import check_bases_take_variants

    check_bases_take_variants(["m3", "f2"], ESPEAK_BASES)  # raises for a base like en-gb

"""Reference codecs (Codec2, Opus through their Debian tools) as yardstick rows of the codec suite: each one
on a two-second file, their rows on the baseline only, a missing tool skipped with its reason."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from vemi_eval.data.corpus import espeak_corpus
from vemi_eval.records import OK, SKIPPED
from vemi_eval.yardsticks import REFERENCE_CODECS, check_names, roundtrip

SR = 24000


@pytest.fixture(scope="module")
def two_seconds() -> np.ndarray:
    audio = espeak_corpus(split="heldout", sample_rate=SR)[0].audio
    return np.ascontiguousarray(audio[: 2 * SR], dtype=np.float32)


@pytest.mark.parametrize("name", sorted(REFERENCE_CODECS))
def test_each_yardstick_round_trips_two_seconds_aligned(name, two_seconds):
    from pystoi import stoi

    codec = REFERENCE_CODECS[name]
    if codec.missing():  # set-up installs both packages; a machine without them skips with the reason
        pytest.skip(codec.missing())
    out, lag = roundtrip(codec, two_seconds, SR)
    assert out.shape == two_seconds.shape and out.dtype == np.float32
    assert abs(lag) <= 0.1 * SR
    score = stoi(two_seconds, out, SR)
    assert 0.4 < score < 0.999, score  # speech carried, and really coded (not the input back)
    assert codec.version() != "unknown"


def test_more_bits_more_intelligibility_within_a_family(two_seconds):
    from pystoi import stoi

    for low, high in (("codec2-700C", "codec2-3200"), ("opus-6", "opus-12")):
        if REFERENCE_CODECS[low].missing():
            pytest.skip(REFERENCE_CODECS[low].missing())
        lo = stoi(two_seconds, roundtrip(REFERENCE_CODECS[low], two_seconds, SR)[0], SR)
        hi = stoi(two_seconds, roundtrip(REFERENCE_CODECS[high], two_seconds, SR)[0], SR)
        assert hi > lo, (low, lo, high, hi)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown reference codec"):
        check_names(["codec2-1300x"])
    from vemi_eval.measurements.codec import PARAMS, check

    with pytest.raises(ValueError, match="unknown reference codec"):
        check({**PARAMS, "references": ["mp3-128"]})


def test_rows_only_on_the_baseline_and_a_missing_tool_is_skipped_with_its_reason(monkeypatch):
    from tests.test_quality_measurements import by, context
    from vemi_eval.measurements import VariantRef
    from vemi_eval.measurements.codec import measure_codec

    params = {"n_codebooks": [8], "metrics": ["stoi"], "max_utterances": 1, "references": ["codec2-1200"]}
    if REFERENCE_CODECS["codec2-1200"].missing():
        pytest.skip(REFERENCE_CODECS["codec2-1200"].missing())
    recs = measure_codec(context("codec", params))
    ref = by(recs, "stoi", reference_codec="codec2-1200")
    assert len(ref) == 1 and ref[0].status == OK and ref[0].extra["reference"] is True
    assert ref[0].condition["bitrate_kbps"] == 1.2 and "n_codebooks" not in ref[0].condition
    assert ref[0].extra["tool"].startswith("codec2 ")

    other = context("codec", params)
    other = dataclasses.replace(other, variant=VariantRef("int8", ["codec-int8"], other.variant.build))
    assert not by(measure_codec(other), "stoi", reference_codec="codec2-1200")

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda t: None if t == "c2enc" else real_which(t))
    skipped = by(measure_codec(context("codec", params)), "stoi", reference_codec="codec2-1200")
    assert skipped[0].status == SKIPPED and skipped[0].value is None
    assert "c2enc not found" in skipped[0].reason and "codec2" in skipped[0].reason

"""Long recordings (issue 10, case 1): PESQ scored in bounded segments (the pesq extension segfaults on
inputs of minutes), the codec streamed frame by frame over long inputs (same codes, bounded memory),
inputs beyond max_input_s skipped by name, and the record says what was done."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vemi_eval.data import codec_roundtrip as C
from vemi_eval.evaluators import pesq as P
from vemi_eval.measurements import codec as codec_kind
from vemi_eval.measurements.common import load_data


def _speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    from vemi_eval.data.speech_input import synthetic_speech

    return synthetic_speech(int(seconds * rate), rate, seed).astype(np.float32)


def test_pesq_of_a_long_input_is_the_weighted_mean_of_bounded_segments(monkeypatch) -> None:
    import pesq as pesq_package

    rate = 16000
    ref = _speechlike(7.0, rate, 1)
    deg = ref + np.random.default_rng(0).normal(0, 0.02, ref.size).astype(np.float32)
    lengths: list[int] = []
    real = pesq_package.pesq

    def spy(fs, a, b, mode):
        lengths.append(a.size)
        return real(fs, a, b, mode)

    monkeypatch.setattr(pesq_package, "pesq", spy)
    monkeypatch.setattr(P, "SEGMENT_S", 3.0)
    got = P.pesq_wb(ref, deg, rate)
    assert lengths == [48000, 48000, 16000]  # never more than a segment per call
    parts = [real(rate, ref[a:b].astype(np.float64), deg[a:b].astype(np.float64), "wb") for a, b in
             ((0, 48000), (48000, 96000), (96000, 112000))]  # fmt: skip
    assert got == pytest.approx(np.average(parts, weights=[3, 3, 1]), abs=1e-9)
    lengths.clear()
    monkeypatch.setattr(P, "SEGMENT_S", 30.0)
    P.pesq_wb(ref, deg, rate)
    assert lengths == [ref.size]  # a short input: one plain call, as before


def test_pesq_records_how_long_inputs_are_scored() -> None:
    assert "segments" in P.SPEC.info()["method"]


def test_the_codec_streams_long_inputs_with_the_offline_codes(monkeypatch) -> None:
    from reference_model.codec import load_codec

    codec = load_codec("tiny")
    audio = _speechlike(2.5, int(codec.sample_rate), 3)
    offline_codes = C.encode(codec, audio)
    offline = C.decode(codec, offline_codes, 4, audio.size)
    monkeypatch.setattr(C, "STREAM_ABOVE_S", 1.0)
    assert C.streams(codec, audio.size)
    codes = C.encode(codec, audio)
    assert torch.equal(codes, offline_codes)
    out = C.decode(codec, codes, 4, audio.size)
    assert out.shape == offline.shape
    np.testing.assert_allclose(out, offline, atol=1e-4)


def test_inputs_longer_than_max_input_s_are_skipped_by_name() -> None:
    from vemi_eval.errors import DataError
    from vemi_eval.measurements import MeasureContext, VariantRef

    v = VariantRef("base", [], lambda **k: None, True)
    ctx = MeasureContext("s", "codec", v, v, {}, 0, True, "cpu", data={"quick": True})
    every = load_data(ctx, 16000, {**codec_kind.PARAMS, "max_input_s": 1e6})
    cut = sorted(u.audio.size for u in every.utterances)[len(every.utterances) // 2] / 16000
    kept = load_data(ctx, 16000, {**codec_kind.PARAMS, "max_input_s": cut})
    assert 0 < len(kept.utterances) < len(every.utterances)
    skipped = {s["input"] for s in ctx.skipped_inputs}
    assert skipped == {u.id for u in every.utterances} - {u.id for u in kept.utterances}
    assert all("max_input_s" in s["reason"] for s in ctx.skipped_inputs)
    with pytest.raises(DataError, match="max_input_s"):
        load_data(ctx, 16000, {**codec_kind.PARAMS, "max_input_s": 0.01})

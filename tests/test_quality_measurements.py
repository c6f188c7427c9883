"""The quality measurement kinds (codec, wer, speaker, noise) on a fake pass-through codec, so that the
plumbing (data, scoring, records, failures) is tested without the trained tiny codec."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vemi_eval.data.corpus import espeak_corpus
from vemi_eval.measurements import MeasureContext, VariantRef
from vemi_eval.records import FAILED, OK, SKIPPED

SR = 24000
FRAME = 1920


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


class FakeCodec:
    """Codes are per-frame energy bins (so noise changes tokens); decoding returns the encoded input plus
    white noise whose level falls by 3 dB per codebook used (so quality rises with the codebook count)."""

    sample_rate, frame_rate, frame_size, cardinality = SR, 12.5, FRAME, 2048
    num_codebooks = max_codebooks = 8

    def __init__(self):
        self.memory: dict[bytes, np.ndarray] = {}

    def parameters(self):
        return iter([torch.zeros(1)])

    def _codes(self, x: np.ndarray) -> torch.Tensor:
        frames = x.reshape(-1, FRAME)
        db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
        rows = [
            np.floor((db + 100) / (3.0 / (k + 1))).astype(np.int64) % 2048 for k in range(self.num_codebooks)
        ]
        return torch.from_numpy(np.stack(rows))[None]

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav[0, 0].numpy().astype(np.float64)
        x = np.pad(x, (0, (-x.size) % FRAME))
        codes = self._codes(x)
        self.memory[codes[0, 0].numpy().tobytes()] = x
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.memory[codes[0, 0].numpy().tobytes()]
        n = codes.shape[1]
        rms = np.sqrt(np.mean(x**2))
        noise = np.random.default_rng(n).standard_normal(x.size) * rms * 10 ** (-(3.0 * n) / 20)
        return torch.from_numpy((x + noise).astype(np.float32)).view(1, 1, -1)


class FakeStreamer:
    batch_size = 1

    def __init__(self, codec: FakeCodec):
        self.codec = codec
        self.pending: list[np.ndarray] = []

    def reset(self, mask=None):
        self.pending.clear()

    def encode(self, frame: torch.Tensor) -> torch.Tensor:
        x = frame[0, 0].numpy().astype(np.float64)
        self.pending.append(x)
        return self.codec._codes(x)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.pending.pop(0).astype(np.float32)).view(1, 1, -1)


def fake_model(**_):
    codec = FakeCodec()
    return SimpleNamespace(codec=codec, codec_streamer=FakeStreamer(codec), frame_size=FRAME, sample_rate=SR)


def context(kind: str, params: dict, data: dict | None = None) -> MeasureContext:
    v = VariantRef("baseline", [], fake_model, is_baseline=True)
    return MeasureContext(
        suite="t",
        kind=kind,
        variant=v,
        baseline=v,
        params=params,
        seed=0,
        quick=True,
        device="cpu",
        data=data or {"corpus": "espeak"},
    )


def by(records, metric, **cond):
    return [
        r for r in records if r.metric == metric and all(r.condition.get(k) == v for k, v in cond.items())
    ]


def test_codec_quality_rises_with_codebooks_and_counts_items():
    from vemi_eval.measurements.codec import measure_codec

    ctx = context(
        "codec", {"n_codebooks": [1, 4, 8], "metrics": ["pesq_wb", "stoi", "si_sdr"], "max_utterances": 2}
    )
    recs = measure_codec(ctx)
    for metric in ("pesq_wb", "stoi", "si_sdr"):
        vals = [by(recs, metric, n_codebooks=n)[0].value for n in (1, 4, 8)]
        assert vals[0] < vals[1] < vals[2], (metric, vals)
    r = by(recs, "si_sdr", n_codebooks=8)[0]
    assert r.status == OK and r.extra["scored"] == 2 and r.extra["of"] == 2
    assert abs(r.value - 24.0) < 0.5  # the fake adds noise 24 dB below the speech at 8 codebooks
    assert r.condition["bitrate_kbps"] == pytest.approx(8 * 11 * 12.5 / 1000)
    assert r.evaluator["name"] == "sisdr"
    assert len(ctx.samples) == 3 * 3 * 2


def test_noise_ladder_and_token_stability():
    from vemi_eval.measurements.noise import measure_noise

    params = {
        "noise_types": ["white"],
        "snr_db": [20, 5],
        "reverb_rt60_s": [0.5],
        "stages": ["input"],
        "metrics": ["stoi"],
        "max_utterances": 1,
    }
    recs = measure_noise(context("noise", params))
    hi, lo = by(recs, "stoi", snr_db=20.0)[0].value, by(recs, "stoi", snr_db=5.0)[0].value
    assert hi > lo
    assert by(recs, "stoi", noise="reverb")[0].status == OK
    s20 = by(recs, "semantic_token_stability", snr_db=20.0)[0].value
    s5 = by(recs, "semantic_token_stability", snr_db=5.0)[0].value
    assert 0 <= s5 < s20 <= 1


def test_metric_failures_are_reported_not_scored(tmp_path):
    import soundfile as sf

    from vemi_eval.measurements.codec import measure_codec

    # 0.15 s of speech-like noise: usable audio, but too short for STOI's 30 frames
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "short.wav", 0.1 * rng.standard_normal(int(0.15 * SR)), SR)
    sf.write(tmp_path / "broken.wav", np.zeros(0), SR)
    ctx = context("codec", {"n_codebooks": [8], "metrics": ["stoi", "wer"]}, {"dir": str(tmp_path)})
    recs = measure_codec(ctx)
    stoi = by(recs, "stoi")[0]
    assert stoi.status == FAILED and stoi.value is None and "frames" in stoi.reason
    assert stoi.extra["scored"] == 0 and stoi.extra["of"] == 2
    assert any("broken.wav" in f for f in stoi.extra["failures"])
    wer = by(recs, "wer")[0]
    assert wer.status == SKIPPED and "transcript" in wer.reason


def test_speaker_measurement_on_fake():
    from vemi_eval.measurements.speaker import measure_speaker

    ctx = context("speaker", {"max_utterances": 6, "session_utterances": 3, "window_s": 2.0})
    recs = measure_speaker(ctx)
    sims = by(recs, "speaker_similarity")
    assert sims and all(r.status == OK and r.value > 0.8 for r in sims)
    assert len(by(recs, "streamed_speaker_similarity")) >= 2
    eer = {r.condition["stage"]: r for r in by(recs, "speaker_eer")}
    assert eer["original"].status == OK and eer["original"].value <= 0.25


def test_wer_measurement_on_fake():
    from vemi_eval.measurements.wer import measure_wer

    recs = measure_wer(context("wer", {"max_utterances": 2, "beam_size": 1}))
    orig = by(recs, "wer", stage="original")[0]
    rt = by(recs, "wer", stage="roundtrip")[0]
    delta = by(recs, "wer_delta_points")[0]
    assert orig.status == OK and rt.status == OK
    assert delta.value == pytest.approx(100 * (rt.value - orig.value), abs=1e-9)
    assert espeak_corpus("heldout", quick=True)[0].sample_rate == SR


class SwappingCodec(FakeCodec):
    """Decodes each utterance as the one encoded before it (another speaker, round-robin order)."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        keys = list(self.memory)
        mine = keys.index(codes[0, 0].numpy().tobytes())
        other = self.memory[keys[mine - 1]]
        x = self.memory[keys[mine]]
        out = np.resize(other, x.size) if other.size < x.size else other[: x.size]
        return torch.from_numpy(out.astype(np.float32)).view(1, 1, -1)


class GarblingCodec(FakeCodec):
    """Decodes the speech backwards: the same voice and spectrum, no words."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.memory[codes[0, 0].numpy().tobytes()][::-1].copy()
        return torch.from_numpy(x.astype(np.float32)).view(1, 1, -1)


def _with_codec(ctx: MeasureContext, codec_cls) -> MeasureContext:
    def build(**_):
        codec = codec_cls()
        return SimpleNamespace(
            codec=codec, codec_streamer=FakeStreamer(codec), frame_size=FRAME, sample_rate=SR
        )

    ctx.variant = VariantRef("baseline", [], build, is_baseline=True)
    ctx.baseline = ctx.variant
    return ctx


def test_a_round_trip_that_swaps_voices_moves_speaker_similarity():
    from vemi_eval.measurements.speaker import measure_speaker

    params = {"max_utterances": 6, "session_utterances": 3, "window_s": 2.0}
    honest = by(measure_speaker(context("speaker", params)), "speaker_similarity")
    swapped = by(
        measure_speaker(_with_codec(context("speaker", params), SwappingCodec)), "speaker_similarity"
    )
    h = np.mean([r.value for r in honest])
    s = np.mean([r.value for r in swapped])
    assert s < h - 0.05, (h, s)  # a skipped or ignored round trip would leave them equal


def test_a_round_trip_that_garbles_speech_raises_wer():
    from vemi_eval.measurements.wer import measure_wer

    params = {"max_utterances": 2, "beam_size": 1}
    recs = measure_wer(_with_codec(context("wer", params), GarblingCodec))
    orig, rt = by(recs, "wer", stage="original")[0], by(recs, "wer", stage="roundtrip")[0]
    delta = by(recs, "wer_delta_points")[0]
    assert rt.value > orig.value + 0.5 and delta.value > 50, (orig.value, rt.value, delta.value)
    assert delta.ci_low is not None and delta.ci_low > 0  # the interval excludes "no change"


def test_speaker_counts_refused_inputs_in_scored_n_of_m(tmp_path):
    import soundfile as sf

    from vemi_eval.measurements.speaker import measure_speaker

    for i, u in enumerate(espeak_corpus("heldout", quick=True)[:3]):
        (tmp_path / "spk").mkdir(exist_ok=True)
        sf.write(tmp_path / "spk" / f"u{i}.wav", u.audio, u.sample_rate)
    (tmp_path / "spk" / "broken.wav").write_bytes(b"not audio at all")
    ctx = context("speaker", {"session_utterances": 2, "window_s": 1.0}, data={"dir": str(tmp_path)})
    recs = measure_speaker(ctx)
    overall = [r for r in by(recs, "speaker_similarity") if "speaker" not in r.condition][0]
    assert overall.extra["scored"] == 3 and overall.extra["of"] == 4, overall.extra
    assert any("broken.wav" in s["input"] for s in ctx.skipped_inputs), ctx.skipped_inputs

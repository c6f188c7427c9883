"""Latency measurement on a fake duplex model whose stages advance a fake clock by known amounts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from reference_model.report import ModelReport
from vemi_eval import timing
from vemi_eval.data.speech_input import synthetic_speech
from vemi_eval.measurements import MeasureContext, VariantRef
from vemi_eval.measurements.latency import measure_latency

FRAME = 1920


class FakeClock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns

    def advance_ms(self, ms: float) -> None:
        self.ns += int(round(ms * timing.NS_PER_MS))


class FakeDuplex:
    """The DuplexModel interface; each stage costs ``cost(stage, frame_index, batch_size)`` fake ms."""

    def __init__(self, clock: FakeClock, cost: Callable[[str, int, int], float], batch_size: int = 1) -> None:
        self.clock, self.cost, self.batch_size = clock, cost, batch_size
        self.sample_rate, self.frame_size, self.frame_rate = 24000, FRAME, 12.5
        self.max_delay, self.n_user_codebooks, self.dep_q = 1, 8, 8
        self.device = torch.device("cpu")
        self.lm = torch.nn.Linear(4, 4)
        self.codec = torch.nn.Linear(2, 2)
        self.frame = 0
        self.syncs = 0

    def encode_user(self, pcm: torch.Tensor) -> torch.Tensor:
        assert pcm.shape == (self.batch_size, 1, FRAME)
        self.clock.advance_ms(self.cost("encode", self.frame, self.batch_size))
        return torch.zeros(self.batch_size, 8, 1, dtype=torch.long)

    def lm_step(self, codes: torch.Tensor) -> torch.Tensor | None:
        self.clock.advance_ms(self.cost("lm", self.frame, self.batch_size))
        self.frame += 1
        if self.frame <= self.max_delay:
            return None
        return torch.zeros(self.batch_size, 9, 1, dtype=torch.long)

    def decode_model(self, tokens: torch.Tensor) -> torch.Tensor:
        self.clock.advance_ms(self.cost("decode", self.frame - 1, self.batch_size))
        return torch.zeros(self.batch_size, 1, FRAME)

    def reset(self, mask=None) -> None:
        self.frame = 0

    def sync(self) -> None:
        self.syncs += 1

    def report(self) -> ModelReport:
        return ModelReport()


def make_ctx(kind: str, params: dict, build: Callable[..., object], quick: bool = False) -> MeasureContext:
    variant = VariantRef(name="base", flags=[], build=build, is_baseline=True)
    return MeasureContext(
        suite="t",
        kind=kind,
        variant=variant,
        baseline=variant,
        params=params,
        seed=0,
        quick=quick,
        device="cpu",
    )


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(timing, "clock_ns", c)
    return c


def by(records, metric, **cond):
    hits = [
        r for r in records if r.metric == metric and all(r.condition.get(k) == v for k, v in cond.items())
    ]
    assert len(hits) == 1, (metric, cond, hits)
    return hits[0]


def test_percentiles_and_deadline_misses_on_injected_timings(clock):
    # Frame i (after the first + warm-up) costs encode 5, lm 10 + (i % 10) * 10, decode 7 ms:
    # totals 22, 32, ..., 112 ms repeating; 4 of every 10 frames (82..112) exceed 80 ms.
    def cost(stage, i, b):
        return {"encode": 5.0, "lm": 10.0 + (i % 10) * 10.0, "decode": 7.0}[stage] + (
            500.0 if i == 0 else 0.0
        )

    params = {
        "frames": 100,
        "warmup_frames": 9,
        "min_frames": 50,
        "min_duration_s": 1.0,
        "input": "synthetic",
    }
    model = FakeDuplex(clock, cost)
    ctx = make_ctx("latency", params, lambda batch_size, fresh=False: model)
    recs = measure_latency(ctx)
    assert all(r.status == "ok" for r in recs), [r.reason for r in recs if r.status != "ok"]

    measured_lm = np.array([10.0 + (i % 10) * 10.0 for i in range(10, 110)])
    total = measured_lm + 12.0
    assert by(recs, "frame_time_p50_ms", stage="lm").value == pytest.approx(np.percentile(measured_lm, 50))
    assert by(recs, "frame_time_p99_ms", stage="total").value == pytest.approx(np.percentile(total, 99))
    assert by(recs, "frame_time_max_ms", stage="total").value == pytest.approx(112.0)
    assert by(recs, "frame_time_p50_ms", stage="encode").value == pytest.approx(5.0)
    assert by(recs, "deadline_miss_share").value == pytest.approx(0.4)
    assert by(recs, "real_time_factor").value == pytest.approx(total.mean() / 80.0)
    assert by(recs, "jitter_std_ms").value == pytest.approx(total.std(ddof=1))
    assert by(recs, "first_frame_ms").value == pytest.approx(1015.0)  # 500 + 5, 500 + 10, no decode yet
    assert by(recs, "algorithmic_latency_ms").value == pytest.approx(160.0)  # 80 ms frame + 1 delay frame
    e2e = by(recs, "end_to_end_p99_ms")
    assert e2e.value == pytest.approx(160.0 + np.percentile(total, 99))
    assert e2e.ci_low <= e2e.value <= e2e.ci_high
    p99 = by(recs, "frame_time_p99_ms", stage="total")
    assert p99.n == 100 and p99.higher_is_better is False and p99.unit == "ms"
    assert by(recs, "frame_time_p50_ms", stage="decode").n == 100
    assert len(ctx.samples) == 110 and ctx.samples[0]["phase"] == "first"
    assert sum(s["phase"] == "measured" for s in ctx.samples) == 100
    assert model.syncs >= 3 * 110  # every stage read after a device sync


def test_run_extends_to_min_duration(clock):
    # 10 ms frames: 20 frames would last 0.2 s, so the run goes on until 1 s of measured time (100 frames).
    model = FakeDuplex(clock, lambda s, i, b: {"encode": 2.0, "lm": 5.0, "decode": 3.0}[s])
    params = {"frames": 20, "warmup_frames": 2, "min_frames": 10, "min_duration_s": 1.0, "input": "synthetic"}
    recs = measure_latency(make_ctx("latency", params, lambda batch_size, fresh=False: model))
    assert by(recs, "frame_time_p50_ms", stage="total").n == 100
    assert all(r.status == "ok" for r in recs)


def test_too_few_frames_is_invalid(clock):
    model = FakeDuplex(clock, lambda s, i, b: 10.0)
    params = {"frames": 5, "max_frames": 5, "warmup_frames": 1, "min_frames": 50, "min_duration_s": 0.0}
    params["input"] = "synthetic"
    recs = measure_latency(make_ctx("latency", params, lambda batch_size, fresh=False: model))
    assert recs and all(r.status == "invalid" for r in recs)
    assert "5 measured frames < min_frames 50" in recs[0].reason


def test_too_short_is_invalid_and_quick_overrides(clock):
    model = FakeDuplex(clock, lambda s, i, b: 1.0)
    params = {
        "frames": 500,
        "min_frames": 400,
        "min_duration_s": 60.0,
        "max_frames": 500,
        "input": "synthetic",
    }
    params["quick"] = {"frames": 30, "max_frames": 30, "min_frames": 20}
    recs = measure_latency(make_ctx("latency", params, lambda batch_size, fresh=False: model, quick=True))
    assert by(recs, "frame_time_p50_ms", stage="total").n == 30
    assert all(r.status == "invalid" for r in recs)
    assert "min_duration_s 60" in recs[0].reason and "min_frames" not in recs[0].reason


def test_unknown_parameter_is_one_line_error(clock):
    model = FakeDuplex(clock, lambda s, i, b: 1.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        measure_latency(make_ctx("latency", {"frmaes": 3}, lambda batch_size, fresh=False: model))


def test_synthetic_speech_is_deterministic_and_speech_like():
    a = synthetic_speech(24000 * 3, 24000, seed=1)
    assert np.array_equal(a, synthetic_speech(24000 * 3, 24000, seed=1))
    assert not np.array_equal(a, synthetic_speech(24000 * 3, 24000, seed=2))
    rms = np.sqrt(np.mean(a.astype(np.float64) ** 2))
    assert 20 * np.log10(rms) == pytest.approx(-24.0, abs=0.5)
    frame_rms = np.sqrt(np.mean(a[: 24000 * 3 // 480 * 480].reshape(-1, 480) ** 2, axis=1))
    assert (frame_rms < 0.1 * frame_rms.max()).mean() > 0.05  # pauses / syllable gaps exist


# --- interleaved (ABBA) measurement against the baseline -----------------------------------------------


def drifting(clock: FakeClock, factor: float = 1.0, log: list | None = None, name: str = "") -> Callable:
    """A machine that slows down as the run goes on: every stage costs more the later it runs."""

    def cost(stage: str, i: int, b: int) -> float:
        if log is not None and stage == "lm":
            log.append(name)
        return factor * 10.0 * (1.0 + clock.ns / (10_000 * timing.NS_PER_MS))

    return cost


def paired_ctx(variant_model, baseline_model, params) -> MeasureContext:
    base = VariantRef("base", [], lambda batch_size, fresh=False: baseline_model, is_baseline=True)
    var = VariantRef("var", ["x"], lambda batch_size, fresh=False: variant_model)
    return MeasureContext(suite="t", kind="latency", variant=var, baseline=base, params=params, seed=0,
                          quick=False, device="cpu")  # fmt: skip


PAIRED = {"frames": 40, "warmup_frames": 2, "min_frames": 40, "min_duration_s": 0.0, "input": "synthetic"}


def test_interleaved_blocks_run_in_abba_order(clock):
    order: list[str] = []
    v = FakeDuplex(clock, drifting(clock, log=order, name="V"))
    b = FakeDuplex(clock, drifting(clock, log=order, name="B"))
    recs = measure_latency(paired_ctx(v, b, {**PAIRED, "interleave": 10}))
    head = ["V"] * 3 + ["B"] * 3  # first frame + warm-up of each
    blocks = "VBBVVBBV"  # 4 pairs of 10 frames
    assert order == head + [m for m in blocks for _ in range(10)]
    rec = by(recs, "frame_time_p50_ms", stage="total")
    assert rec.n == 40 and rec.extra["order"] == "ABBA with base, 10-frame blocks, 4 pairs"
    twin = rec.extra["paired_baseline"]
    assert twin["variant"] == "base" and len(twin["samples"]) == 40 and twin["statistic"] == "p50"


def test_interleaving_removes_drift_from_the_ratio(clock):
    from vemi_eval.aggregate import fill_intervals

    def ratio(interleave: int, factor: float) -> float:
        clock.ns = 0
        b = FakeDuplex(clock, drifting(clock))
        v = FakeDuplex(clock, drifting(clock, factor))
        if interleave:
            recs = measure_latency(paired_ctx(v, b, {**PAIRED, "interleave": interleave}))
        else:  # the baseline alone first, then the variant: what a sequential run does
            base_recs = measure_latency(make_ctx("latency", PAIRED, lambda batch_size, fresh=False: b))
            recs = measure_latency(paired_ctx(v, b, PAIRED))
            for r in base_recs:
                r.variant, r.kind = "base", "latency"
        for r in recs:
            r.variant, r.kind = "var", "latency"
        fill_intervals(recs + ([] if interleave else base_recs), {}, "base", 0)
        rec = by(recs, "frame_time_p50_ms", stage="lm")
        assert rec.ratio_ci_low <= rec.ratio_to_baseline <= rec.ratio_ci_high
        return rec.ratio_to_baseline

    assert ratio(0, 1.0) > 1.05  # A/A measured one after the other: the drift reads as a slow-down
    assert ratio(5, 1.0) == pytest.approx(1.0, abs=0.02)  # side by side: no difference
    assert ratio(5, 2.0) == pytest.approx(2.0, rel=0.03)


def test_interleave_is_refused_with_pace(clock):
    from vemi_eval.measurements.latency import PARAMS, check

    with pytest.raises(ValueError, match="interleave and pace"):
        check({**PARAMS, "interleave": 5, "pace": True})


def test_the_interleaved_baseline_twin_keeps_its_own_algorithmic_latency(clock):
    """A variant whose codec holds back 30 ms more (an iSTFT decoder) is 30 ms behind its baseline twin:
    the twin's algorithmic latency is the baseline's, not the variant's."""
    v = FakeDuplex(clock, drifting(clock))
    b = FakeDuplex(clock, drifting(clock))
    v.codec.decode_delay = 720  # samples at 24 kHz
    recs = measure_latency(paired_ctx(v, b, {**PAIRED, "interleave": 10}))
    rec = by(recs, "algorithmic_latency_ms")
    assert rec.value == pytest.approx(160.0 + 30.0)
    assert rec.extra["paired_baseline"]["value"] == pytest.approx(160.0)

"""Throughput SLA search on a fake model whose batch step time is known exactly."""

from __future__ import annotations

import pytest
import torch

from tests.test_latency import FakeClock, FakeDuplex, by, make_ctx
from vemi_eval import timing
from vemi_eval.measurements.throughput import find_max_streams, measure_throughput


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(timing, "clock_ns", c)
    return c


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 5, 8, 13, 31, 32, 33, 64, 100])
def test_search_finds_the_largest_size_that_meets(limit):
    calls: list[int] = []

    def meets(n: int) -> bool:
        calls.append(n)
        return n <= limit

    best, probed = find_max_streams(meets, max_batch=64)
    assert best == min(limit, 64)
    assert len(calls) == len(set(calls))  # no size measured twice
    assert len(calls) <= 2 * 7 + 1  # doubling then bisection: logarithmic


def cost_linear(stage: str, i: int, n: int) -> float:
    # frame time of a batch of n = 15 + 8 n ms: n = 8 gives 79 ms, n = 9 gives 87 ms
    return {"encode": 2.0 + 1.0 * n, "lm": 10.0 + 5.0 * n, "decode": 3.0 + 2.0 * n}[stage]


def test_throughput_finds_max_streams_on_known_times(clock):
    built: list[int] = []

    def build(batch_size: int = 1, fresh: bool = False):
        built.append(batch_size)
        return FakeDuplex(clock, cost_linear, batch_size=batch_size)

    params = {"frames": 12, "warmup_frames": 2, "max_batch": 32, "input": "synthetic", "n_boot": 200}
    ctx = make_ctx("throughput", params, build)
    recs = measure_throughput(ctx)
    assert by(recs, "max_realtime_streams").value == 8
    assert sorted(built) == sorted(set(built))  # each probed size built once
    assert 8 in built and 9 in built
    for n in built:
        t = 15.0 + 8.0 * n
        assert by(recs, "frame_time_p99_ms", batch_size=n).value == pytest.approx(t)
        assert by(recs, "frames_per_second", batch_size=n).value == pytest.approx(n * 1000.0 / t)
        assert by(recs, "cost_per_stream_frame_ms", batch_size=n).value == pytest.approx(t / n)
        assert by(recs, "goodput_share", batch_size=n).value == (1.0 if t <= 80.0 else 0.0)
    assert by(recs, "realtime_frames_per_second").value == pytest.approx(8 * 1000.0 / 79.0)
    assert by(recs, "frames_per_second", batch_size=4).higher_is_better is True
    rows = [s for s in ctx.samples if s["batch_size"] == 8]
    assert len(rows) == 12  # measured frames only, warm-up excluded


def test_out_of_memory_is_a_failed_probe_not_a_number(clock):
    def build(batch_size: int = 1, fresh: bool = False):
        if batch_size > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return FakeDuplex(clock, lambda s, i, n: 1.0, batch_size=batch_size)

    params = {"frames": 5, "warmup_frames": 1, "max_batch": 16, "input": "synthetic", "n_boot": 50}
    recs = measure_throughput(make_ctx("throughput", params, build))
    assert by(recs, "max_realtime_streams").value == 4
    failed = by(recs, "frames_per_second", batch_size=8)
    assert failed.status == "failed" and failed.value is None and "out of memory" in failed.reason


def test_other_errors_propagate(clock):
    def build(batch_size: int = 1, fresh: bool = False):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        measure_throughput(make_ctx("throughput", {"input": "synthetic"}, build))

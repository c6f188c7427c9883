"""Fakes shared by the runner, CLI and gate tests: a measurement kind, a build function, a flag.

The fake kind draws lognormal "step times" from the run's seed; the variant with the ``test-slow`` flag is
slower by ``slow_factor``. A switch lets a test make the kind crash on one variant (for --resume).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from reference_model.enhancements import FLAGS, FlagSpec
from vemi_eval import measurements
from vemi_eval.measurements import MeasurementSpec
from vemi_eval.records import MetricRecord

CALLS: list[tuple[str, str]] = []  # (kind, variant) of every fake measurement call
CRASH_ON: set[str] = set()  # variants on which fake_b raises


class FakeModel:
    def __init__(self, spec) -> None:
        self.spec = spec
        self.flags = list(spec.flags or [])
        self.resets = 0

    def reset(self, mask=None) -> None:
        self.resets += 1


def fake_build(spec) -> FakeModel:
    return FakeModel(spec)


def _step_times(ctx) -> np.ndarray:
    model = ctx.variant.build(batch_size=1)
    rng = np.random.default_rng(ctx.seed)
    factor = ctx.params.get("slow_factor", 1.3) if "test-slow" in model.flags else 1.0
    return rng.lognormal(mean=np.log(10.0), sigma=0.2, size=int(ctx.params.get("n", 40))) * factor


def fake_a(ctx):
    CALLS.append(("fake_a", ctx.variant.name))
    t = _step_times(ctx)
    ctx.add_samples({"metric": "step_ms", "frame": i, "value": float(v)} for i, v in enumerate(t))
    return [
        MetricRecord(
            ctx.suite,
            ctx.variant.name,
            "step_ms",
            float(np.median(t)),
            "ms",
            len(t),
            higher_is_better=False,
            samples=t.tolist(),
            statistic="median",
            extra={
                "frames": len(t),
                "duration_s": len(t) * 0.08,
            },
        ),
        MetricRecord(
            ctx.suite, ctx.variant.name, "mean_ms", float(np.mean(t)), "ms", len(t), higher_is_better=False
        ),
    ]


def fake_b(ctx):
    CALLS.append(("fake_b", ctx.variant.name))
    if ctx.variant.name in CRASH_ON:
        raise RuntimeError("fake crash part-way")
    t = _step_times(ctx)
    return [
        MetricRecord(
            ctx.suite,
            ctx.variant.name,
            "other_ms",
            float(np.median(t)),
            "ms",
            len(t),
            higher_is_better=False,
            samples=t.tolist(),
        )
    ]


FAKE_KINDS = {
    "fake_a": MeasurementSpec("fake_a", fake_a, params={"n": 40, "slow_factor": 1.3}),
    "fake_b": MeasurementSpec("fake_b", fake_b, params={"n": 40, "slow_factor": 1.3}),
}

SUITE = textwrap.dedent(
    """\
    [suite]
    name = "fake"
    description = "fake suite for tests"
    threads = 1

    [[variants]]
    name = "base"

    [[variants]]
    name = "slow"
    flags = ["test-slow"]

    [validity]
    min_frames = 10

    [fake_a]
    n = 60
    [fake_a.quick]
    n = 20

    [fake_b]
    n = 30
    """
)


def _noop_apply(*args) -> None:
    return None


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    """Only the fake kinds are registered, a test flag exists, history goes to tmp, CALLS is cleared."""
    monkeypatch.setattr(measurements, "load_all", lambda: dict(FAKE_KINDS))
    monkeypatch.setitem(FLAGS, "test-slow", FlagSpec("test-slow", "test", "runtime", "test-only slow flag"))
    monkeypatch.setitem(
        FLAGS, "test-cuda", FlagSpec("test-cuda", "test", "runtime", "test-only GPU flag", requires_cuda=True)
    )
    monkeypatch.setenv("VEMI_HISTORY", str(tmp_path / "history.sqlite"))
    import reference_model.build

    monkeypatch.setattr(reference_model.build, "build_duplex", fake_build)
    CALLS.clear()
    CRASH_ON.clear()
    yield
    CALLS.clear()
    CRASH_ON.clear()


def write_suite(tmp_path: Path, text: str = SUITE, name: str = "fake.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p

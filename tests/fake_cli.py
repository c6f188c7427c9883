"""`python -m tests.fake_cli run ...`: the real command line with the fake kinds of test_runner_helpers
and a slow one, for tests that signal a real process (SIGKILL, SIGINT)."""

from __future__ import annotations

import sys
import time

import numpy as np

from reference_model.enhancements import FLAGS, FlagSpec
from tests.test_runner_helpers import FAKE_KINDS, fake_build
from vemi_eval import measurements
from vemi_eval.measurements import MeasurementSpec
from vemi_eval.records import MetricRecord


def slow_kind(ctx):
    """Seeded values, a pause per call: a signal lands between two finished measurements."""
    time.sleep(float(ctx.params["pause_s"]))
    x = np.random.default_rng(ctx.seed + len(ctx.variant.name)).normal(10.0, 1.0, size=20)
    return [MetricRecord(ctx.suite, ctx.variant.name, "v", float(x.mean()), "x", 20, samples=x.tolist())]


SLOW = {k: MeasurementSpec(k, slow_kind, params={"pause_s": 0.5}) for k in ("slow_a", "slow_b", "slow_c")}

if __name__ == "__main__":
    kinds = {**FAKE_KINDS, **SLOW}
    measurements.load_all = lambda: dict(kinds)
    FLAGS["test-slow"] = FlagSpec("test-slow", "test", "runtime", "test-only slow flag")
    import reference_model.build

    reference_model.build.build_duplex = fake_build
    from vemi_eval.cli import main

    main(sys.argv[1:])

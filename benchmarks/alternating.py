"""Side-by-side timing for the benchmarks: every arm runs on the same input in each round, arms alternating,
so that load from other processes hits them alike; the first ``warmup`` rounds are dropped. Imported by
the benchmark scripts beside it (run as ``python benchmarks/NAME.py``: this folder is on the path)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch


def time_alternating(
    calls: Mapping[str, Callable[[Any], object]], make_input: Callable[[], Any], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds of each call per measured round, by arm name."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + rounds):
        x = make_input()
        for name, call in calls.items():
            t0 = time.perf_counter()
            call(x)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def machine_facts(threads: int) -> dict[str, Any]:
    """What a timing was taken on (every benchmark's JSON begins with it)."""
    return {
        "threads": threads,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
    }

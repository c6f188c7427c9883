"""Clocks for the systems measurements: one monotonic host clock, read after the device has finished.

On CUDA, kernels are queued: a host clock read right after a call measures the launch, not the work. Every
timed stage therefore calls ``sync()`` (``DuplexModel.sync``: ``torch.cuda.synchronize``) before the clock
is read, so host-clock intervals are the wall time a live caller waits for. ``CudaEventTimer`` gives the
device-side time of a region as well (what the GPU spent, launch gaps excluded).

``clock_ns`` is looked up at call time (``timing.clock_ns()``), never bound at import, so tests replace
it with a fake clock and check the statistics on exact, injected timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

NS_PER_MS = 1_000_000


def clock_ns() -> int:
    """The host clock every measurement reads (monotonic, nanoseconds)."""
    return time.perf_counter_ns()


def no_sync() -> None:
    return None


def timed_call(fn: Callable[..., Any], *args: Any, sync: Callable[[], None] = no_sync) -> tuple[Any, float]:
    """Run ``fn(*args)`` and return (result, milliseconds), with queued device work drained on both sides.

    The sync before the first clock read keeps work queued by an earlier stage out of this stage's time.
    """
    sync()
    start = clock_ns()
    out = fn(*args)
    sync()
    return out, (clock_ns() - start) / NS_PER_MS


class Stopwatch:
    """``with Stopwatch(sync) as sw: ...`` then ``sw.ms``: a synchronised wall-clock region."""

    def __init__(self, sync: Callable[[], None] = no_sync) -> None:
        self.sync = sync
        self.ms: float = float("nan")
        self._start = 0

    def __enter__(self) -> Stopwatch:
        self.sync()
        self._start = clock_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sync()
        self.ms = (clock_ns() - self._start) / NS_PER_MS


class CudaEventTimer:
    """Device time of a region from a pair of CUDA events (unverified on this CPU-only machine).

    ``with CudaEventTimer() as t: ...`` then ``t.ms`` (reading it waits for the end event).
    """

    def __init__(self) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("CudaEventTimer needs CUDA")
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def __enter__(self) -> CudaEventTimer:
        self._start.record()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end.record()

    @property
    def ms(self) -> float:
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))


def sync_for(model: Any) -> Callable[[], None]:
    """The model's ``sync`` when it has one (DuplexModel), else a no-op."""
    fn = getattr(model, "sync", None)
    return fn if callable(fn) else no_sync

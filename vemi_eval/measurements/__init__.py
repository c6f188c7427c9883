"""Measurement kinds: the code that turns a model variant into metric records.

A suite file names measurement kinds (``latency``, ``throughput``, ``memory``, ``fidelity``, ``codec``,
``wer``, ``speaker``, ``noise``...). Each kind is a function registered here:

    @measurement("latency")
    def measure_latency(ctx: MeasureContext) -> Iterable[MetricRecord]: ...

The runner builds the context (the variant to measure, the suite's parameters for this kind, the seed,
where raw samples go) and stores what comes back. A measurement never writes results files itself; it
hands raw per-sample rows to ``ctx.add_samples`` and returns records.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..records import MetricRecord


@dataclass
class VariantRef:
    """A variant of the suite: a name, its flags, and how to build it (built lazily, once)."""

    name: str
    flags: list[str]
    build: Callable[..., Any]  # build(batch_size=1, **overrides) -> reference_model.DuplexModel
    is_baseline: bool = False


@dataclass
class MeasureContext:
    suite: str
    kind: str
    variant: VariantRef
    baseline: VariantRef
    params: dict[str, Any]  # the suite file's table for this kind
    seed: int
    quick: bool
    device: str
    data: Any = None  # data handle for quality suites (vemi_eval.data), None for systems suites
    samples: list[dict[str, Any]] = field(default_factory=list)
    progress: Callable[[str], None] = lambda msg: None

    def add_samples(self, rows: Iterable[dict[str, Any]]) -> None:
        """Raw per-sample data (one dict per frame, utterance...); stored beside results.json."""
        for r in rows:
            self.samples.append({"suite": self.suite, "variant": self.variant.name, "kind": self.kind, **r})


MeasureFn = Callable[[MeasureContext], Iterable[MetricRecord]]
MEASUREMENTS: dict[str, MeasureFn] = {}


def measurement(kind: str) -> Callable[[MeasureFn], MeasureFn]:
    def deco(fn: MeasureFn) -> MeasureFn:
        if kind in MEASUREMENTS:
            raise RuntimeError(f"measurement {kind!r} registered twice")
        MEASUREMENTS[kind] = fn
        return fn

    return deco


def load_all() -> dict[str, MeasureFn]:
    """Import every module of this package (each registers its kinds) and return the registry."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return dict(MEASUREMENTS)

"""The records that flow from measurements to the results store, the report and the gates."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# status of one metric record
OK = "ok"  # measured
INVALID = "invalid"  # measured, but the run broke a validity rule (too few frames, too short...)
FAILED = "failed"  # could not be measured (evaluator error, bad input): value is None, reason says why
SKIPPED = "skipped"  # not applicable (metric needs a reference or transcript that this data lacks)


@dataclass
class MetricRecord:
    """One number. ``value`` is None unless status is ok or invalid: a failure is never a score."""

    suite: str
    variant: str
    metric: str
    value: float | None
    unit: str
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    status: str = OK
    reason: str = ""
    condition: dict[str, Any] = field(default_factory=dict)  # e.g. {"snr_db": 10, "noise": "pink"}
    higher_is_better: bool | None = None
    # variant / baseline ratio with its bootstrap interval, filled by the runner for non-baseline variants
    ratio_to_baseline: float | None = None
    ratio_ci_low: float | None = None
    ratio_ci_high: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status in (FAILED, SKIPPED):
            self.value = None
        elif self.value is not None and not math.isfinite(float(self.value)):
            raise ValueError(f"{self.suite}/{self.variant}/{self.metric}: non-finite value {self.value}")

    def key(self) -> tuple:
        """Identity of a measurement inside a run (used by --resume)."""
        return (self.suite, self.variant, self.metric, tuple(sorted(self.condition.items())))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

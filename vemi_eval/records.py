"""The records that flow from measurements to the results store, the report and the gates."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# status of one metric record
OK = "ok"  # measured
INVALID = "invalid"  # measured, but the run broke a validity rule (too few frames, too short...)
FAILED = "failed"  # could not be measured (evaluator error, bad input): value is None, reason says why
SKIPPED = "skipped"  # not applicable (metric needs a reference or transcript that this data lacks)
# measured, but a statistic conditioned on an event (a latency given a take-over) met fewer such events
# than the suite's min_samples: shown with its n and the threshold, never a verdict, not a broken rule
UNDERPOWERED = "underpowered"
MEASURED = (OK, INVALID, UNDERPOWERED)  # the statuses of a record that measured something


@dataclass
class MetricRecord:
    """One number. ``value`` is None unless status is ok or invalid: a failure is never a score.

    What the harness reads back (the kind that made the record, its raw samples and the statistic over
    them, the evaluator, data hashes, the frame budget) are fields of their own; ``extra`` holds only
    facts shown to a reader (frames, notes, per-layer figures...), never read by key by the harness
    except the validity rules' ``frames`` and ``duration_s``.
    """

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
    kind: str = ""  # the measurement kind that made it (set by the runner when the kind leaves it empty)
    samples: list[float] | None = None  # raw samples behind value (intervals, ratios, the gate's U test)
    statistic: str | None = None  # what value is of the samples: "mean", "median", "p99"...
    evaluator: dict[str, Any] | None = None  # {"name": ..., version, weight hashes}
    data: dict[str, str] = field(default_factory=dict)  # data set name -> sha256
    budget_ms: float | None = None  # the frame budget a timing was measured against
    # a variant measured on several checkpoints (training seeds): each one's figures, pooled into value
    replicates: list[dict[str, Any]] | None = None
    # the event each sample is conditioned on ("a take-over" for a latency given one); n counts those
    # events, so n below min_samples makes the record UNDERPOWERED, not INVALID (the model took few turns:
    # the unconditioned rate says so and carries the verdict)
    conditional_on: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # the definition of the kind's metrics it was measured under (@measurement(version=...)); results
    # written before versions read as 1. The gate never compares values of two versions.
    measurement_version: int = 1

    def __post_init__(self) -> None:
        clash = sorted(set(self.extra) & TYPED_FIELDS)
        if clash:  # a typed fact passed in extra would be invisible to every reader of the field
            raise ValueError(f"{self.metric}: {', '.join(clash)} are fields of MetricRecord, not extra keys")
        if self.status in (FAILED, SKIPPED):
            self.value = None
        elif self.value is not None and not math.isfinite(float(self.value)):
            raise ValueError(f"{self.suite}/{self.variant}/{self.metric}: non-finite value {self.value}")

    def key(self) -> tuple:
        """Identity of a measurement inside a run (used by --resume)."""
        return (self.suite, self.variant, self.metric, tuple(sorted(self.condition.items())))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricRecord:
        """A record from results.json; schema 1 kept the typed facts inside ``extra``: they are lifted."""
        d = upgrade_metric(d)
        return cls(**{k: v for k, v in d.items() if k in _FIELD_NAMES})


_FIELD_NAMES = frozenset(f.name for f in fields(MetricRecord))
TYPED_FIELDS = frozenset({"kind", "samples", "statistic", "evaluator", "data", "budget_ms"})


def upgrade_metric(d: dict[str, Any]) -> dict[str, Any]:
    """A metric dict of schema 1 (typed facts in ``extra``) in the shape of schema 2; others unchanged."""
    extra = d.get("extra") or {}
    if not (TYPED_FIELDS & set(extra)):
        return d
    d = dict(d)
    d["extra"] = {k: v for k, v in extra.items() if k not in TYPED_FIELDS}
    for k in TYPED_FIELDS & set(extra):
        if d.get(k) in (None, "", {}):
            d[k] = extra[k]
    return d

"""What the gate reads of a run's side-by-side measurements: which variant is the baseline, which the A/A
control, and how far the A/A control's ratio strays from 1 (the run's own noise on each metric).

On a shared runner a whole run can be 10-60% slower than the run before it, while inside each run every
variant's ratio to its interleaved baseline holds to a few percent. So the gate compares a variant's
ratio with the baseline run's ratio, and takes the A/A control (the baseline measured again, in the same
run) as the size of a change that is noise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def metric_key(m: Mapping[str, Any]) -> tuple[str, str]:
    return str(m.get("metric", "")), json.dumps(m.get("condition") or {}, sort_keys=True, default=str)


@dataclass(frozen=True)
class SideBySide:
    """A run's variants as the gate sees them."""

    baseline: str | None
    aa: frozenset[str]
    compared: frozenset[str]  # variants other than the baseline and the A/A control
    aa_records: Mapping[tuple[str, str], Mapping[str, Any]]  # (metric, condition) -> the A/A record

    @property
    def single_variant(self) -> bool:
        """Nothing to take a ratio to: the gate keeps the absolute test."""
        return not self.compared

    def aa_band(self, m: Mapping[str, Any]) -> float | None:
        """How far the A/A ratio of ``m``'s metric strays from 1, its interval included (0.04: the
        baseline measured against itself moved up to 4%); None without an A/A record of it."""
        rec = self.aa_records.get(metric_key(m))
        if rec is None:
            return None
        values = [rec.get(k) for k in ("ratio_to_baseline", "ratio_ci_low", "ratio_ci_high")]
        known = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        return max(abs(v - 1.0) for v in known) if known else None


def side_by_side(doc: Mapping[str, Any]) -> SideBySide:
    """The run's baseline, A/A control and compared variants (a results file without a ``variants`` list
    is read as one variant: the single-variant suites of old)."""
    variants = doc.get("variants") or []
    baseline = next((v.get("name") for v in variants if v.get("is_baseline")), None)
    aa = frozenset(str(v.get("name")) for v in variants if v.get("aa"))
    compared = frozenset(str(v.get("name")) for v in variants if v.get("name") != baseline) - aa
    records = {metric_key(m): m for m in doc.get("metrics", []) if m.get("variant") in aa}
    return SideBySide(baseline, aa, compared, records)


def combined_band(a: float | None, b: float | None) -> float | None:
    """The noise of a difference of two ratios, each with its own A/A band: their root sum of squares."""
    known = [x for x in (a, b) if x is not None]
    return math.sqrt(sum(x * x for x in known)) if known else None

"""The verdict on one measured value against one claim, and on a (claim, context) row of them.

Verdicts, checked in this order (the first that applies):

- ``no verdict``: the run is INVALID or INCOMPLETE, or the record itself is invalid; the reason is given.
- ``not applicable``: the claim depends on trained weights (speculative acceptance and its speed-up,
  MoD's quality, token agreement) and the model ran on random weights.
- ``proxy``: the measurement stands in for the claim (sdpa or eager attention for flash-attn,
  torch.compile for CUDA graphs, the serving simulation for continuous batching); it says what it measured.
- ``underpowered: baseline not converged``: a training-side claim whose control arm's loss still fell by
  more than 5% over its last 20% of steps (vemi_eval/training_budget.py); ``underpowered: baseline
  convergence not shown`` where the arm's budget is recorded but it logged too few losses to tell (a run
  of 15-25 steps logs one). An arm whose budget was not recorded at all keeps its verdict, and its
  context says "budget not recorded".
- a deterministic value without a sampling interval (bytes, FLOPs, an agreement of 1.0) is judged against
  the claim's bar with ``EXACT_TOLERANCE`` (2% relative): ``meets`` or ``falls short``, "exact, 2%
  tolerance".
- ``meets`` / ``falls short`` / ``inconclusive`` from the value's interval against the bar; a ``falls
  short`` or ``inconclusive`` becomes ``underpowered`` when the claimed effect is smaller than the
  comparison's minimum detectable effect (MDE).

The MDE at 80% power (two-sided alpha 0.05): 2.8 standard errors of the comparison, as a relative change.
For a timing the standard error is the A/A control's (the baseline measured again in the same run): half
its ratio interval's width in log space / 1.96, or its distance from 1 / 1.96 where that is larger (an A/A
ratio away from 1 is drift the interval did not show). For a training, the seeds' spread: the standard
error of the difference of the arms' means over seeds, relative to the baseline's value.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EXACT_TOLERANCE = 0.02  # relative, on the claim's bar: 0.254 against "4x reduction" (0.25) meets
Z_POWER = 1.96 + 0.8416  # two-sided alpha 0.05 plus 80% power

MEETS, FALLS_SHORT, INCONCLUSIVE = "meets", "falls short", "inconclusive"
PROXY, NOT_APPLICABLE, UNDERPOWERED, NO_VERDICT = "proxy", "not applicable", "underpowered", "no verdict"
NOT_MEASURED, MIXED = "not measured", "mixed"


@dataclass(frozen=True)
class Verdict:
    kind: str
    why: str = ""

    @property
    def text(self) -> str:
        return f"{self.kind}: {self.why}" if self.why else self.kind


@dataclass(frozen=True)
class ClaimBar:
    """What a value is judged against: the claim's bar and the direction that is better."""

    threshold: float | None
    better: str  # lower | higher | mixed

    @property
    def effect(self) -> float | None:
        """The least relative change the claim promises (|bar - 1|: "15-25% faster" -> 0.15)."""
        return None if self.threshold is None else abs(self.threshold - 1.0)

    def good(self, x: float, slack: float = 0.0) -> bool:
        assert self.threshold is not None
        if self.better == "lower":
            return x <= self.threshold * (1.0 + slack)
        return x >= self.threshold * (1.0 - slack)


@dataclass(frozen=True)
class Evidence:
    """One measured value and what is known about how it was measured."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    run_status: str = "VALID"
    run_reasons: tuple[str, ...] = ()
    record_status: str = "ok"
    record_reason: str = ""
    exact: bool = False  # the kind declares it deterministic
    random_weights: bool = False
    needs_trained_weights: bool = False
    proxy: str | None = None  # what it measured, when it stands in for the claim
    mde: float | None = None
    mde_basis: str = ""  # "A/A control" | "2 seeds" | ""
    training_side: bool = False
    control_converged: bool | None = None
    control_budget_recorded: bool = False  # every control arm's budget is known (its convergence may not be)


def interval_verdict(bar: ClaimBar, value: float, low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return f"{MEETS} (no CI)" if bar.good(value) else f"{FALLS_SHORT} (no CI)"
    if bar.good(low) and bar.good(high):
        return MEETS
    if not bar.good(low) and not bar.good(high):
        return FALLS_SHORT
    return INCONCLUSIVE


def judge(bar: ClaimBar, e: Evidence) -> Verdict:
    """The verdict on one value (the module's docstring gives the order)."""
    if e.value is None or bar.threshold is None:
        return Verdict(NOT_MEASURED)
    if e.run_status != "VALID":
        reasons = "; ".join(e.run_reasons) or "see its results.json"
        return Verdict(NO_VERDICT, f"the run is {e.run_status} ({reasons})")
    if e.record_status != "ok":
        return Verdict(
            NO_VERDICT,
            f"the record is {e.record_status}" + (f" ({e.record_reason})" if e.record_reason else ""),
        )
    if e.needs_trained_weights and e.random_weights:
        return Verdict(NOT_APPLICABLE, "random weights (the claim depends on what a trained model predicts)")
    if e.proxy:
        return Verdict(PROXY, e.proxy)
    if bar.better == "mixed":
        return Verdict("not comparable")
    if e.training_side and e.control_converged is False:
        return Verdict(UNDERPOWERED, "baseline not converged")
    if e.training_side and e.control_converged is None and e.control_budget_recorded:
        return Verdict(UNDERPOWERED, "baseline convergence not shown (too few logged losses)")
    zero_width = e.ci_low is None or e.ci_high is None or e.ci_low == e.ci_high
    if e.exact and zero_width:
        kind = MEETS if bar.good(e.value, EXACT_TOLERANCE) else FALLS_SHORT
        return Verdict(kind, f"exact, {EXACT_TOLERANCE:.0%} tolerance")
    base = interval_verdict(bar, e.value, e.ci_low, e.ci_high)
    effect = bar.effect
    if not base.startswith(MEETS) and e.mde is not None and effect is not None and effect < e.mde:
        return Verdict(UNDERPOWERED, f"claimed effect {effect:.0%} < MDE {e.mde:.0%} ({e.mde_basis})")
    return Verdict(base)


def mde_from_aa(ratio: float | None, low: float | None, high: float | None) -> float | None:
    """The MDE of a ratio measured beside an A/A control with this ratio and interval (module docstring);
    None without an interval (a single observation says nothing about its spread)."""
    if ratio is None or low is None or high is None or min(ratio, low, high) <= 0:
        return None
    se = max((math.log(high) - math.log(low)) / (2 * 1.96), abs(math.log(ratio)) / 1.96)
    return math.exp(Z_POWER * se) - 1.0


def mde_from_seeds(variant_seeds: Sequence[float], baseline_seeds: Sequence[float]) -> float | None:
    """The MDE of a variant/baseline ratio from the spread between seeds (module docstring); None with
    fewer than 2 seeds on the variant (no spread to read) or a baseline mean of 0."""
    if len(variant_seeds) < 2 or not baseline_seeds:
        return None
    base = statistics.fmean(baseline_seeds)
    if base == 0:
        return None
    var = statistics.variance(variant_seeds) / len(variant_seeds)
    if len(baseline_seeds) >= 2:
        var += statistics.variance(baseline_seeds) / len(baseline_seeds)
    return Z_POWER * math.sqrt(var) / abs(base)


def seed_values(record: Mapping[str, Any]) -> list[float]:
    """A pooled record's per-seed values (its ``replicates``), the ok ones."""
    reps = record.get("replicates") or []
    return [
        float(r["value"]) for r in reps if isinstance(r, Mapping) and isinstance(r.get("value"), (int, float))
    ]


def overall(kinds: Sequence[str]) -> str:
    """One verdict for a (claim, context) row from its measurements' verdicts (kinds, reasons dropped):
    their common verdict; meets beside falls short: mixed; meets or falls short beside inconclusive or
    underpowered: inconclusive. Proxy, not-applicable and no-verdict values count only in a row without a
    judged one."""
    found = list(dict.fromkeys(k.split(" (")[0].split(":")[0] for k in kinds))
    if not found:
        return NOT_MEASURED
    judged = {k for k in found if k in (MEETS, FALLS_SHORT, INCONCLUSIVE, UNDERPOWERED)}
    if not judged:
        return found[0] if len(found) == 1 else MIXED
    if len(judged) == 1:
        return judged.pop()
    if {MEETS, FALLS_SHORT} <= judged:
        return MIXED
    return INCONCLUSIVE

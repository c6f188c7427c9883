"""Regression gate: a run against a committed baseline results.json, metric by metric.

Three tests, chosen per metric:

- **exact**: a metric its measurement kind declares deterministic (``exact=`` of
  :func:`vemi_eval.measurements.measurement`: bytes, token agreement, quality scores on fixed data) must
  equal the baseline's within ``exact_tolerance`` (relative, default 1e-6: the float noise of a summation
  order, not a change of behaviour), or, for a value that is not a whole number, within
  ``float_tolerance`` (absolute, default 0: scores such as STOI or a KL move in the 4th decimal between
  CPU families). Bytes, FLOPs and frame counts stay exact. A move in the bad direction fails; one without
  a recorded direction fails in either direction (the behaviour changed).
- **ratio**: a noisy metric (timings, peak RSS) of a variant measured side by side with the run's baseline
  (``ratio_to_baseline`` on both sides) is gated by that ratio, not by its absolute value: it regresses
  when the ratio moved in its bad direction by more than the larger of ``ratio_tolerance`` (or a rule's
  ``tolerance``) and the two runs' A/A bands combined (vemi_eval/gate_ratios.py: how far the A/A
  control's ratio and interval stray from 1, root sum of squares). A shared runner that is 40% slower
  this time moves every variant and its interleaved baseline alike; the ratio holds.
- **mann-whitney**: the baseline's own noisy metrics, a variant's noisy metric without a ratio (compile
  time), and every noisy metric of a single-variant suite (nothing to take a ratio to; the gate says so)
  regress when they moved in the bad direction (``higher_is_better`` of the record, or a rule's
  ``better``) by more than ``tolerance``, AND, when both sides carry raw samples, a one-sided Mann-Whitney
  U test says the shift is real (p < alpha); without samples the tolerance alone decides (test
  "tolerance"). In a run with variants such a failure is **environment drift** (verdict ``drift``, not a
  failure: the machine, not the code, changed speed) when, for a baseline metric, most variants' ratios
  to it held, and, for a variant's timing without a ratio, it is within ``tolerance`` once divided by the
  run's drift (the median move of the baseline's timings). A slowdown by one factor in every variant
  looks the same and shows as drift too; one that adds the same time to every variant moves the ratios
  of the fast variants and fails there. The A/A control's own rows are not gated: they are the tolerance.

A metric measured in the baseline but missing, failed or invalid now is a regression too (a gate that passes
when a measurement disappears catches nothing), and so is a run that is not VALID. A record underpowered on
either side (a latency given a take-over, with fewer take-overs than min_samples) is not gated: its value
bears no verdict, and the rate of its events (the turn-over rate) is gated on its own.

A metric whose kind was redefined between the two runs (``@measurement(version=...)``, stored in each record;
records written before versions read as version 1) is not compared: its row reads **measurement
redefined**, neither a regression of the model nor a pass (JUnit: skipped), and a note says to record a new
baseline.

The rules file and --threshold: vemi_eval/gate_rules.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ResultsError
from .gate_ratios import SideBySide, combined_band, metric_key, side_by_side
from .gate_rules import (  # noqa: F401  (re-exported: the gate's callers read the rules from here)
    DEFAULT_ALPHA,
    DEFAULT_EXACT_TOLERANCE,
    DEFAULT_FLOAT_TOLERANCE,
    DEFAULT_RATIO_TOLERANCE,
    DEFAULT_TOLERANCE,
    GateRulesError,
    MetricRule,
    Rule,
    Rules,
    load_rules,
    parse_fraction,
)
from .records import UNDERPOWERED, upgrade_metric
from .results import read_results
from .stats import mann_whitney

EXACT, MANN_WHITNEY, TOLERANCE_ONLY, RATIO = "exact", "mann-whitney", "tolerance", "ratio"
REGRESSION, OK, IMPROVED, NOT_GATED, NEW = "REGRESSION", "ok", "improved", "not gated", "new"
DRIFT = "drift"  # the baseline moved, the ratios held: the machine changed speed, not the code
REDEFINED = "measurement redefined"  # the kind's version differs: two definitions, nothing to compare


@dataclass
class GateRow:
    variant: str
    metric: str
    condition: dict[str, Any]
    unit: str
    baseline: float | None
    current: float | None
    change: float | None  # relative change in the bad direction (+0.3 = 30% worse)
    p_value: float | None
    tolerance: float
    verdict: str
    reason: str = ""
    test: str = ""  # exact | mann-whitney | tolerance; "" for a row nothing was tested on
    suite: str = ""
    better: str | None = None  # "lower" | "higher": the direction it was judged in; None: none known
    current_ci: tuple[float, float] | None = None  # the current value's interval, where recorded
    baseline_ratio: float | None = None  # ratio test: the baseline run's variant / its baseline
    current_ratio: float | None = None  # ratio test: the run's variant / its interleaved baseline

    @property
    def ratio(self) -> float | None:
        """current / baseline, where both exist and the baseline is not 0."""
        if self.baseline is None or self.current is None or self.baseline == 0:
            return None
        return self.current / self.baseline


@dataclass
class GateResult:
    rows: list[GateRow]
    notes: list[str]
    suite: str = ""

    @property
    def failed(self) -> bool:
        return any(r.verdict == REGRESSION for r in self.rows)


def _key(m: Mapping[str, Any]) -> tuple[str, str, str, str]:
    cond = json.dumps(m.get("condition") or {}, sort_keys=True, default=str)
    return (m.get("suite", ""), m.get("variant", ""), m.get("metric", ""), cond)


def _samples(m: Mapping[str, Any]) -> list[float] | None:
    s = upgrade_metric(dict(m)).get("samples")  # a results dict of schema 1 kept them in extra
    if isinstance(s, list) and len(s) >= 2 and all(isinstance(x, (int, float)) for x in s):
        return [float(x) for x in s]
    return None


def _kind(m: Mapping[str, Any]) -> str:
    return str(upgrade_metric(dict(m)).get("kind") or "")


def measurement_version(m: Mapping[str, Any]) -> int:
    """The version of its kind a record was measured under; 1 for results written before versions."""
    v = m.get("measurement_version")
    return v if isinstance(v, int) and not isinstance(v, bool) else 1


def _is_exact(m: Mapping[str, Any]) -> bool:
    """Whether the record's kind declared its metric deterministic (an unknown kind: not)."""
    from .measurements import is_exact

    kind = _kind(m)
    return bool(kind) and bool(is_exact(kind, str(m.get("metric", ""))))


def compare(
    current: Mapping[str, Any], baseline: Mapping[str, Any], rules: Rules | None = None
) -> GateResult:
    """Every metric of the baseline against the current run (plus metrics new in the current run)."""
    rules = rules or Rules()
    mine, theirs = (current.get("suite") or {}).get("name"), (baseline.get("suite") or {}).get("name")
    if mine and theirs and mine != theirs:  # nothing would match: every metric would read "missing"
        raise ResultsError(
            f"the run is of suite {mine!r} and the baseline of {theirs!r}: a gate compares runs of one suite"
        )
    notes: list[str] = []
    rows: list[GateRow] = []
    if current.get("status") != "VALID":
        reasons = "; ".join(current.get("invalid_reasons") or []) or "see its results.json"
        why = f"the run is {current.get('status')}: {reasons}"
        rows.append(GateRow("*", "run status", {}, "", None, None, None, None, 0.0, REGRESSION, why))
    for what in ("cpu", "gpu", "torch"):
        a = (baseline.get("environment") or {}).get(what)
        b = (current.get("environment") or {}).get(what)
        if a != b:
            notes.append(f"{what} differs from the baseline's ({b!r} vs {a!r}): timings may not compare")
    if baseline.get("quick") != current.get("quick"):
        notes.append("one run is --quick and the other is not")
    cur = {_key(m): m for m in current.get("metrics", [])}
    base = {_key(m): m for m in baseline.get("metrics", [])}
    theirs_sbs, mine_sbs = side_by_side(baseline), side_by_side(current)
    if theirs_sbs.single_variant:
        notes.append("a single-variant suite: its timings are gated on absolute values (no ratio to take)")
    redefined: set[str] = set()  # the kinds whose version differs between the two runs
    for key, b in base.items():
        weak = [x for x in (b, cur.get(key) or {}) if x.get("status") == UNDERPOWERED]
        if weak:  # no verdict on either side: the rate of its events is gated instead
            why = "; ".join(str(x.get("reason") or UNDERPOWERED) for x in weak)
            now = (cur.get(key) or {}).get("value")
            rows.append(_unscored(b, b.get("value"), now, rules.tolerance, NOT_GATED, why))
            continue
        if b.get("status") != "ok" or b.get("value") is None:
            continue
        variant, metric = key[1], key[2]
        rule = rules.for_metric(variant, metric)
        exact = _is_exact(b) if rule.exact is None else rule.exact
        default_tol = rules.exact_tolerance if exact else rules.tolerance
        tol = default_tol if rule.tolerance is None else rule.tolerance
        c = cur.get(key)
        if rule.ignore:
            row = _unscored(b, b["value"], c and c.get("value"), tol, NOT_GATED, "ignored by a rule")
        elif c is None:
            row = _unscored(b, b["value"], None, tol, REGRESSION, "missing from the run")
        elif c.get("status") != "ok" or c.get("value") is None:
            why = f"{c.get('status')}: {c.get('reason', '')}"
            row = _unscored(b, b["value"], c.get("value"), tol, REGRESSION, why)
        elif measurement_version(b) != measurement_version(c):
            why = (
                f"{_kind(c) or 'its kind'} is version {measurement_version(c)} here and "
                f"{measurement_version(b)} in the baseline: two definitions, not compared"
            )
            row = _unscored(b, b["value"], c["value"], tol, REDEFINED, why)
            redefined.add(_kind(c) or metric)
        elif exact:
            row = _compare_exact(b, c, tol, rule.better, rules.float_tolerance)
        elif variant in theirs_sbs.aa:
            why = "the A/A control: its spread is the tolerance of the ratios"
            row = _unscored(b, float(b["value"]), float(c["value"]), tol, NOT_GATED, why)
        elif variant != theirs_sbs.baseline and _has_ratio(b) and _has_ratio(c):
            floor = rules.ratio_tolerance if rule.tolerance is None else rule.tolerance
            row = _compare_ratio(b, c, floor, theirs_sbs, mine_sbs, rule.better)
        else:
            row = _compare_statistical(b, c, tol, rule.alpha, rule.better)
        rows.append(_with_current_facts(row, b, c, rule.better))
    _call_drift(rows, theirs_sbs)
    if redefined:
        notes.append(
            f"measurement redefined since the baseline: {', '.join(sorted(redefined))}; its metrics are not "
            "compared (record a new baseline to gate them)"
        )
    for key, c in cur.items():
        if key not in base and c.get("status") == "ok":
            row = _unscored(c, None, c.get("value"), rules.tolerance, NEW, "not in the baseline")
            rows.append(_with_current_facts(row, c, c, rules.for_metric(key[1], key[2]).better))
    return GateResult(rows, notes, suite=str(mine or theirs or ""))


def _has_ratio(m: Mapping[str, Any]) -> bool:
    r = m.get("ratio_to_baseline")
    return isinstance(r, (int, float)) and math.isfinite(r) and r > 0


def _compare_ratio(
    b: Mapping[str, Any],
    c: Mapping[str, Any],
    floor: float,
    theirs: SideBySide,
    mine: SideBySide,
    better: str | None,
) -> GateRow:
    """A variant's ratio to its run's baseline against the baseline run's ratio; the tolerance is the
    larger of ``floor`` and the two runs' A/A bands combined."""
    rb, rc = float(b["ratio_to_baseline"]), float(c["ratio_to_baseline"])
    better = _direction(b, c, better)
    band = combined_band(theirs.aa_band(b), mine.aa_band(c))
    tol = floor if band is None else max(floor, band)
    basis = "no A/A control" if band is None else f"A/A band {band:.1%}"
    if better is None:
        why = "no direction (higher_is_better unset; a rule can set better)"
        row = _unscored(b, float(b["value"]), float(c["value"]), tol, NOT_GATED, why)
    else:
        change = _bad_change(rb, rc, better)
        verdict = REGRESSION if change > tol else (IMPROVED if change < -tol else OK)
        why = f"ratio to the run's baseline x{rb:.3g} -> x{rc:.3g}, {change:+.1%} "
        why += f"(tolerance {tol:.1%}: {basis})"
        row = _row(b, c, change, None, tol, verdict, why if verdict != OK else "", RATIO)
    row.baseline_ratio, row.current_ratio = rb, rc
    return row


TIME_UNITS = ("ms", "s")


def _call_drift(rows: list[GateRow], theirs: SideBySide) -> None:
    """Environment drift, not regression, in a run with variants: a baseline metric that failed its
    absolute test while most variants' ratios on that metric held (a variant whose ratio broke fails on
    its own row; a change that moves most ratios at once keeps the baseline a regression too); and a
    variant's timing that has no
    ratio (compile time) and failed its absolute test, but not once divided by the run's drift (the
    median move of the baseline's timings). With no ratio to tell, a baseline metric stays a regression."""
    if theirs.single_variant:
        return
    absolute = (MANN_WHITNEY, TOLERANCE_ONLY)
    ratio_rows: dict[tuple[str, str], list[GateRow]] = {}
    for r in rows:
        if r.test == RATIO:
            ratio_rows.setdefault(metric_key({"metric": r.metric, "condition": r.condition}), []).append(r)
    moves = sorted(
        r.current / r.baseline
        for r in rows
        if r.variant == theirs.baseline and r.test in absolute and r.better == "lower"
        and r.unit in TIME_UNITS and r.baseline and r.current is not None
    )  # fmt: skip
    drift = moves[len(moves) // 2] if moves else None
    for r in rows:
        if r.verdict != REGRESSION or r.test not in absolute or r.variant in theirs.aa:
            continue
        if r.variant == theirs.baseline:
            held = ratio_rows.get(metric_key({"metric": r.metric, "condition": r.condition}), [])
            kept = sum(x.verdict != REGRESSION for x in held)
            if held and kept * 2 > len(held):
                r.verdict = DRIFT
                r.reason = (
                    f"environment drift: the baseline moved {r.change:+.1%} between runs but {kept} of "
                    f"{len(held)} variants' ratios to it held ({r.reason})"
                )
        elif drift and r.better == "lower" and r.unit in TIME_UNITS and r.baseline and r.current is not None:
            adjusted = r.current / r.baseline / drift - 1.0
            if adjusted <= r.tolerance:
                r.verdict = DRIFT
                r.reason = (
                    f"environment drift: moved {r.change:+.1%}, {adjusted:+.1%} after the run's drift "
                    f"(the baseline's timings x{drift:.3g}, median; tolerance {r.tolerance:.0%})"
                )


def _with_current_facts(
    row: GateRow, b: Mapping[str, Any], c: Mapping[str, Any] | None, better: str | None
) -> GateRow:
    """The direction the row was judged in and the current value's interval (for the exported files)."""
    row.better = _direction(b, c or {}, better)
    if c is not None and c.get("ci_low") is not None and c.get("ci_high") is not None:
        row.current_ci = (float(c["ci_low"]), float(c["ci_high"]))
    return row


def _unscored(
    record: Mapping[str, Any],
    baseline: float | None,
    current: float | None,
    tolerance: float,
    verdict: str,
    reason: str,
) -> GateRow:
    """A row without a change figure: a metric ignored, missing, failed, new, or without a direction."""
    return GateRow(
        str(record.get("variant", "")),
        str(record.get("metric", "")),
        record.get("condition") or {},
        record.get("unit", ""),
        baseline,
        current,
        None,
        None,
        tolerance,
        verdict,
        reason,
        suite=str(record.get("suite", "")),
    )


def _direction(b: Mapping[str, Any], c: Mapping[str, Any], better: str | None) -> str | None:
    if better is not None:
        return better
    hib = c.get("higher_is_better")
    hib = b.get("higher_is_better") if hib is None else hib
    return None if hib is None else ("higher" if hib else "lower")


def _bad_change(bv: float, cv: float, better: str) -> float:
    """Relative change in the bad direction (+0.3 = 30% worse)."""
    sign = 1.0 if better == "lower" else -1.0
    return sign * (cv - bv) / abs(bv) if bv != 0 else sign * (cv - bv)


def _row(b, c, change, p, tol, verdict, reason, test) -> GateRow:
    row = _unscored(b, float(b["value"]), float(c["value"]), tol, verdict, reason)
    row.change, row.p_value, row.test = change, p, test
    return row


def _compare_exact(
    b: Mapping[str, Any], c: Mapping[str, Any], tol: float, better: str | None, float_tol: float = 0.0
) -> GateRow:
    """A deterministic metric: any move beyond ``tol`` (relative) in the bad direction (either, without
    one) fails; a value that is not a whole number may also move by ``float_tol`` (absolute)."""
    bv, cv = float(b["value"]), float(c["value"])
    better = _direction(b, c, better)
    if not (bv.is_integer() and cv.is_integer()) and abs(cv - bv) <= float_tol:
        return _row(b, c, 0.0, None, tol, OK, f"within the float tolerance {float_tol:g}", EXACT)
    if better is None:
        moved = abs(cv - bv) / abs(bv) if bv != 0 else abs(cv - bv)
        if moved > tol:
            why = f"deterministic metric changed by {moved:.3g} (exact, tolerance {tol:.3g}; no direction)"
            return _row(b, c, moved, None, tol, REGRESSION, why, EXACT)
        return _row(b, c, moved, None, tol, OK, "", EXACT)
    change = _bad_change(bv, cv, better)
    if change > tol:
        why = f"deterministic metric {change:+.3g} worse (exact, tolerance {tol:.3g})"
        return _row(b, c, change, None, tol, REGRESSION, why, EXACT)
    return _row(b, c, change, None, tol, IMPROVED if change < -tol else OK, "", EXACT)


def _compare_statistical(
    b: Mapping[str, Any], c: Mapping[str, Any], tol: float, alpha: float, better: str | None
) -> GateRow:
    """A noisy metric: worse by more than ``tol`` and, with samples on both sides, Mann-Whitney p < alpha."""
    bv, cv = float(b["value"]), float(c["value"])
    better = _direction(b, c, better)
    if better is None:
        why = "no direction (higher_is_better unset; a rule can set better)"
        return _unscored(b, bv, cv, tol, NOT_GATED, why)
    change = _bad_change(bv, cv, better)
    bs, cs = _samples(b), _samples(c)
    p, test = None, TOLERANCE_ONLY
    if bs and cs:
        p = mann_whitney(cs, bs, alternative="greater" if better == "lower" else "less")
        test = MANN_WHITNEY
    if change > tol and (p is None or p < alpha):
        why = f"{change:+.1%} worse (tolerance {tol:.0%})" + (
            f", Mann-Whitney p={p:.2g} < {alpha:g}" if p is not None else ", no samples to test"
        )
        return _row(b, c, change, p, tol, REGRESSION, why, test)
    if change > tol:
        why = f"worse beyond tolerance but not significant (Mann-Whitney p={p:.2g} >= {alpha:g})"
        return _row(b, c, change, p, tol, OK, why, test)
    return _row(b, c, change, p, tol, IMPROVED if change < -tol else OK, "", test)


def run_gate(
    run: str | Path,
    baseline: str | Path,
    rules_file: str | Path | None = None,
    thresholds: Sequence[str] = (),
) -> GateResult:
    rules = load_rules(rules_file, thresholds)
    base = read_results(baseline)
    check_baseline(base)
    return compare(read_results(run), base, rules)


def check_baseline(base: Mapping[str, Any]) -> None:
    """A baseline that is not VALID, or that holds no scored metric, would pass any run: ResultsError
    (exit 2) naming it."""
    where = base.get("_path", "the baseline")
    if base.get("status") != "VALID":
        raise ResultsError(f"baseline {where} is {base.get('status')!r}, not VALID: a gate needs a valid run")
    if not any(m.get("status") == "ok" and m.get("value") is not None for m in base.get("metrics", [])):
        raise ResultsError(f"baseline {where} holds no scored metric: nothing to compare against")


def format_table(result: GateResult, show_all: bool = False) -> str:
    """A plain-text table, regressions first; ok rows only with show_all."""
    order = {REGRESSION: 0, REDEFINED: 1, DRIFT: 2, IMPROVED: 3, NEW: 4, NOT_GATED: 5, OK: 6}
    rows = sorted(result.rows, key=lambda r: (order.get(r.verdict, 9), r.variant, r.metric))
    if not show_all:
        rows = [r for r in rows if r.verdict in (REGRESSION, REDEFINED, DRIFT, IMPROVED)] or []

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.4g}"

    head = ("verdict", "variant", "metric", "condition", "baseline", "current", "change", "test", "p", "why")
    table = [head]
    for r in rows:
        cond = ",".join(f"{k}={v}" for k, v in sorted(r.condition.items()))
        change = "-" if r.change is None else (f"{r.change:+.3g}" if r.test == EXACT else f"{r.change:+.1%}")
        p = "-" if r.p_value is None else f"{r.p_value:.2g}"
        cur = num(r.current) + (f" {r.unit}" if r.unit and r.current is not None else "")
        was = num(r.baseline)
        if r.test == RATIO:  # what was gated first, the absolute value beside it
            was, cur = f"x{r.baseline_ratio:.4g} ({was})", f"x{r.current_ratio:.4g} ({cur})"
        table.append((r.verdict, r.variant, r.metric, cond, was, cur, change, r.test or "-", p, r.reason))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]) - 1)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    counts: dict[str, int] = {}
    for r in result.rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: order.get(kv[0], 9)))
    out = lines if len(table) > 1 else []
    out += [f"note: {n}" for n in result.notes]
    out.append(f"gate: {'FAILED' if result.failed else 'passed'} ({summary or 'nothing compared'})")
    return "\n".join(out)

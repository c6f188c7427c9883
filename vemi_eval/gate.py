"""Regression gate: a run against a committed baseline results.json, metric by metric.

Two tests, chosen per metric:

- **exact**: a metric its measurement kind declares deterministic (``exact=`` of
  :func:`vemi_eval.measurements.measurement`: bytes, token agreement, quality scores on fixed data) must
  equal the baseline's within ``exact_tolerance`` (relative, default 1e-6: the float noise of a summation
  order, not a change of behaviour). A move in the bad direction fails; one without a recorded direction
  fails in either direction (the behaviour changed).
- **mann-whitney**: any other metric (wall-clock timings, peak RSS) regresses when it moved in its bad
  direction (``higher_is_better`` of the record, or a rule's ``better``) by more than ``tolerance``, AND,
  when both sides carry raw samples (the records' ``samples``), a one-sided Mann-Whitney U test says the
  shift is real (p < alpha). Without samples the tolerance alone decides (test "tolerance").

A metric measured in the baseline but missing, failed or invalid now is a regression too (a gate that passes
when a measurement disappears catches nothing), and so is a run that is not VALID.

Rules file (TOML; the first matching rule wins; patterns are globs)::

    [default]
    tolerance = 0.10        # relative change allowed in the bad direction (statistical metrics)
    alpha = 0.01            # significance for the Mann-Whitney test
    exact_tolerance = 1e-6  # relative change allowed for deterministic metrics
    [[rules]]
    metric = "lm_step*"     # required
    variant = "*"           # optional
    tolerance = 0.05        # optional; also: alpha, better = "lower" | "higher", ignore = true,
    exact = false           # gate a deterministic metric statistically (another CPU, another BLAS)

A rule's ``tolerance`` applies to the metric whichever test it gets.
"""

from __future__ import annotations

import fnmatch
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ResultsError, VemiError
from .records import upgrade_metric
from .results import read_results
from .stats import mann_whitney

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_TOLERANCE = 0.10
DEFAULT_ALPHA = 0.01
DEFAULT_EXACT_TOLERANCE = 1e-6
EXACT, MANN_WHITNEY, TOLERANCE_ONLY = "exact", "mann-whitney", "tolerance"
REGRESSION, OK, IMPROVED, NOT_GATED, NEW = "REGRESSION", "ok", "improved", "not gated", "new"


class GateRulesError(VemiError):
    """An unreadable or invalid rules file or --threshold."""


@dataclass
class Rule:
    metric: str = "*"
    variant: str = "*"
    tolerance: float | None = None
    alpha: float | None = None
    better: str | None = None  # overrides the record's higher_is_better
    ignore: bool = False
    exact: bool | None = None  # overrides the kind's declaration

    def matches(self, variant: str, metric: str) -> bool:
        return fnmatch.fnmatchcase(metric, self.metric) and fnmatch.fnmatchcase(variant, self.variant)


@dataclass
class MetricRule:
    """What the rules say for one metric."""

    tolerance: float | None  # None: the default of its test
    alpha: float
    better: str | None
    ignore: bool
    exact: bool | None  # None: as its kind declares


@dataclass
class Rules:
    tolerance: float = DEFAULT_TOLERANCE
    alpha: float = DEFAULT_ALPHA
    exact_tolerance: float = DEFAULT_EXACT_TOLERANCE
    rules: list[Rule] = field(default_factory=list)

    def for_metric(self, variant: str, metric: str) -> MetricRule:
        for r in self.rules:
            if r.matches(variant, metric):
                alpha = self.alpha if r.alpha is None else r.alpha
                return MetricRule(r.tolerance, alpha, r.better, r.ignore, r.exact)
        return MetricRule(None, self.alpha, None, False, None)


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


def parse_fraction(text: str) -> float:
    """ "10%" or "0.1" -> 0.1."""
    t = str(text).strip()
    try:
        v = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise GateRulesError(
            f"bad tolerance {text!r} (a fraction such as 0.1 or a percentage such as 10%)"
        ) from None
    if not math.isfinite(v) or v < 0:
        raise GateRulesError(f"bad tolerance {text!r}: must be >= 0")
    return v


def load_rules(path: str | Path | None = None, thresholds: Sequence[str] = ()) -> Rules:
    """Rules from a TOML file, then --threshold values ("10%" sets the default, "pattern=5%" adds a rule
    that wins over the file's)."""
    rules = Rules()
    if path is not None:
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise GateRulesError(f"cannot read rules file {p}: {exc}") from None
        unknown = set(doc) - {"default", "rules"}
        if unknown:
            raise GateRulesError(f"{p}: unknown table {sorted(unknown)[0]!r} (default, rules)")
        default = doc.get("default", {})
        if not isinstance(default, dict):
            raise GateRulesError(f"{p}: 'default' must be a table ([default])")
        if not isinstance(doc.get("rules", []), list):
            raise GateRulesError(f"{p}: 'rules' must be an array of tables ([[rules]])")
        bad = set(default) - {"tolerance", "alpha", "exact_tolerance"}
        if bad:
            raise GateRulesError(
                f"{p}: [default] unknown key {sorted(bad)[0]!r} (tolerance, alpha, exact_tolerance)"
            )
        if "tolerance" in default:
            rules.tolerance = parse_fraction(default["tolerance"])
        if "exact_tolerance" in default:
            rules.exact_tolerance = parse_fraction(default["exact_tolerance"])
        if "alpha" in default:
            rules.alpha = _alpha(default["alpha"], p)
        for i, r in enumerate(doc.get("rules", [])):
            if not isinstance(r, dict) or "metric" not in r:
                raise GateRulesError(f"{p}: rule #{i + 1} needs a 'metric' pattern")
            bad = set(r) - set(Rule.__dataclass_fields__)
            if bad:
                raise GateRulesError(f"{p}: rule #{i + 1} unknown key {sorted(bad)[0]!r}")
            if r.get("better") not in (None, "lower", "higher"):
                raise GateRulesError(f"{p}: rule #{i + 1} better must be 'lower' or 'higher'")
            for flag in ("ignore", "exact"):
                if flag in r and not isinstance(r[flag], bool):
                    raise GateRulesError(f"{p}: rule #{i + 1} {flag} must be true or false")
            rules.rules.append(
                Rule(
                    metric=str(r["metric"]),
                    variant=str(r.get("variant", "*")),
                    tolerance=parse_fraction(r["tolerance"]) if "tolerance" in r else None,
                    alpha=_alpha(r["alpha"], p) if "alpha" in r else None,
                    better=r.get("better"),
                    ignore=bool(r.get("ignore", False)),
                    exact=r.get("exact"),
                )
            )
    cli_rules = []
    for t in thresholds:
        pattern, sep, value = t.rpartition("=")
        if sep:
            cli_rules.append(Rule(metric=pattern.strip(), tolerance=parse_fraction(value)))
        else:
            rules.tolerance = parse_fraction(value)
    rules.rules = cli_rules + rules.rules
    return rules


def _alpha(v: Any, where: Path) -> float:
    try:
        a = float(v)
    except (TypeError, ValueError):
        raise GateRulesError(f"{where}: alpha must be a number in (0, 1)") from None
    if not 0.0 < a < 1.0:
        raise GateRulesError(f"{where}: alpha must be in (0, 1), got {a}")
    return a


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
    for key, b in base.items():
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
        elif exact:
            row = _compare_exact(b, c, tol, rule.better)
        else:
            row = _compare_statistical(b, c, tol, rule.alpha, rule.better)
        rows.append(_with_current_facts(row, b, c, rule.better))
    for key, c in cur.items():
        if key not in base and c.get("status") == "ok":
            row = _unscored(c, None, c.get("value"), rules.tolerance, NEW, "not in the baseline")
            rows.append(_with_current_facts(row, c, c, rules.for_metric(key[1], key[2]).better))
    return GateResult(rows, notes, suite=str(mine or theirs or ""))


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


def _compare_exact(b: Mapping[str, Any], c: Mapping[str, Any], tol: float, better: str | None) -> GateRow:
    """A deterministic metric: any move beyond ``tol`` in the bad direction (either, without one) fails."""
    bv, cv = float(b["value"]), float(c["value"])
    better = _direction(b, c, better)
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
    order = {REGRESSION: 0, IMPROVED: 1, NEW: 2, NOT_GATED: 3, OK: 4}
    rows = sorted(result.rows, key=lambda r: (order.get(r.verdict, 9), r.variant, r.metric))
    if not show_all:
        rows = [r for r in rows if r.verdict in (REGRESSION, IMPROVED)] or []

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.4g}"

    head = ("verdict", "variant", "metric", "condition", "baseline", "current", "change", "test", "p", "why")
    table = [head]
    for r in rows:
        cond = ",".join(f"{k}={v}" for k, v in sorted(r.condition.items()))
        change = "-" if r.change is None else (f"{r.change:+.3g}" if r.test == EXACT else f"{r.change:+.1%}")
        p = "-" if r.p_value is None else f"{r.p_value:.2g}"
        cur = num(r.current) + (f" {r.unit}" if r.unit and r.current is not None else "")
        table.append(
            (r.verdict, r.variant, r.metric, cond, num(r.baseline), cur, change, r.test or "-", p, r.reason)
        )
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

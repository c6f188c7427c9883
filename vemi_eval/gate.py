"""Regression gate: a run against a committed baseline results.json, metric by metric.

A metric regresses when it moved in its bad direction (``higher_is_better`` of the record, or a rule's
``better``) by more than its tolerance, AND, when both sides carry raw samples (the records' ``samples``), a
one-sided Mann-Whitney U test says the shift is real (p < alpha). Without samples the tolerance alone
decides. A metric measured in the baseline but missing, failed or invalid now is a regression too (a gate
that passes when a measurement disappears catches nothing), and so is a run that is not VALID.

Rules file (TOML; the first matching rule wins; patterns are globs)::

    [default]
    tolerance = 0.10        # relative change allowed in the bad direction
    alpha = 0.01            # significance for the Mann-Whitney test
    [[rules]]
    metric = "lm_step*"     # required
    variant = "*"           # optional
    tolerance = 0.05        # optional; also: alpha, better = "lower" | "higher", ignore = true
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

    def matches(self, variant: str, metric: str) -> bool:
        return fnmatch.fnmatchcase(metric, self.metric) and fnmatch.fnmatchcase(variant, self.variant)


@dataclass
class Rules:
    tolerance: float = DEFAULT_TOLERANCE
    alpha: float = DEFAULT_ALPHA
    rules: list[Rule] = field(default_factory=list)

    def for_metric(self, variant: str, metric: str) -> tuple[float, float, str | None, bool]:
        for r in self.rules:
            if r.matches(variant, metric):
                tol = self.tolerance if r.tolerance is None else r.tolerance
                alpha = self.alpha if r.alpha is None else r.alpha
                return tol, alpha, r.better, r.ignore
        return self.tolerance, self.alpha, None, False


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


@dataclass
class GateResult:
    rows: list[GateRow]
    notes: list[str]

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
        bad = set(default) - {"tolerance", "alpha"}
        if bad:
            raise GateRulesError(f"{p}: [default] unknown key {sorted(bad)[0]!r} (tolerance, alpha)")
        if "tolerance" in default:
            rules.tolerance = parse_fraction(default["tolerance"])
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
            rules.rules.append(
                Rule(
                    metric=str(r["metric"]),
                    variant=str(r.get("variant", "*")),
                    tolerance=parse_fraction(r["tolerance"]) if "tolerance" in r else None,
                    alpha=_alpha(r["alpha"], p) if "alpha" in r else None,
                    better=r.get("better"),
                    ignore=bool(r.get("ignore", False)),
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
        rows.append(
            GateRow(
                "*",
                "run status",
                {},
                "",
                None,
                None,
                None,
                None,
                0.0,
                REGRESSION,
                f"the run is {current.get('status')}: {reasons}",
            )
        )
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
        tol, alpha, better, ignore = rules.for_metric(variant, metric)
        c = cur.get(key)
        if ignore:
            rows.append(
                _unscored(
                    variant, metric, b, b["value"], c and c.get("value"), tol, NOT_GATED, "ignored by a rule"
                )
            )
            continue
        if c is None:
            rows.append(
                _unscored(variant, metric, b, b["value"], None, tol, REGRESSION, "missing from the run")
            )
            continue
        if c.get("status") != "ok" or c.get("value") is None:
            rows.append(
                _unscored(
                    variant,
                    metric,
                    b,
                    b["value"],
                    c.get("value"),
                    tol,
                    REGRESSION,
                    f"{c.get('status')}: {c.get('reason', '')}",
                )
            )
            continue
        rows.append(_compare_one(b, c, variant, metric, tol, alpha, better))
    for key, c in cur.items():
        if key not in base and c.get("status") == "ok":
            rows.append(
                _unscored(
                    key[1], key[2], c, None, c.get("value"), rules.tolerance, NEW, "not in the baseline"
                )
            )
    return GateResult(rows, notes)


def _unscored(
    variant: str,
    metric: str,
    record: Mapping[str, Any],
    baseline: float | None,
    current: float | None,
    tolerance: float,
    verdict: str,
    reason: str,
) -> GateRow:
    """A row without a change figure: a metric ignored, missing, failed, new, or without a direction."""
    cond, unit = record.get("condition") or {}, record.get("unit", "")
    return GateRow(variant, metric, cond, unit, baseline, current, None, None, tolerance, verdict, reason)


def _compare_one(
    b: Mapping[str, Any],
    c: Mapping[str, Any],
    variant: str,
    metric: str,
    tol: float,
    alpha: float,
    better: str | None,
) -> GateRow:
    bv, cv = float(b["value"]), float(c["value"])
    cond, unit = b.get("condition") or {}, b.get("unit", "")
    if better is None:
        hib = c.get("higher_is_better", b.get("higher_is_better"))
        better = None if hib is None else ("higher" if hib else "lower")
    if better is None:
        return _unscored(
            variant,
            metric,
            b,
            bv,
            cv,
            tol,
            NOT_GATED,
            "no direction (higher_is_better unset; a rule can set better)",
        )
    sign = 1.0 if better == "lower" else -1.0
    change = sign * (cv - bv) / abs(bv) if bv != 0 else sign * (cv - bv)
    bs, cs = _samples(b), _samples(c)
    p = None
    if bs and cs:
        p = mann_whitney(cs, bs, alternative="greater" if better == "lower" else "less")
    if change > tol and (p is None or p < alpha):
        why = f"{change:+.1%} worse (tolerance {tol:.0%})" + (
            f", Mann-Whitney p={p:.2g}" if p is not None else ""
        )
        return GateRow(variant, metric, cond, unit, bv, cv, change, p, tol, REGRESSION, why)
    if change > tol:
        return GateRow(
            variant,
            metric,
            cond,
            unit,
            bv,
            cv,
            change,
            p,
            tol,
            OK,
            f"worse beyond tolerance but not significant (p={p:.2g} >= {alpha})",
        )
    if change < -tol:
        return GateRow(variant, metric, cond, unit, bv, cv, change, p, tol, IMPROVED, "")
    return GateRow(variant, metric, cond, unit, bv, cv, change, p, tol, OK, "")


def run_gate(
    run: str | Path,
    baseline: str | Path,
    rules_file: str | Path | None = None,
    thresholds: Sequence[str] = (),
) -> GateResult:
    rules = load_rules(rules_file, thresholds)
    return compare(read_results(run), read_results(baseline), rules)


def format_table(result: GateResult, show_all: bool = False) -> str:
    """A plain-text table, regressions first; ok rows only with show_all."""
    order = {REGRESSION: 0, IMPROVED: 1, NEW: 2, NOT_GATED: 3, OK: 4}
    rows = sorted(result.rows, key=lambda r: (order.get(r.verdict, 9), r.variant, r.metric))
    if not show_all:
        rows = [r for r in rows if r.verdict in (REGRESSION, IMPROVED)] or []

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.4g}"

    table = [("verdict", "variant", "metric", "condition", "baseline", "current", "change", "p", "why")]
    for r in rows:
        cond = ",".join(f"{k}={v}" for k, v in sorted(r.condition.items()))
        change = "-" if r.change is None else f"{r.change:+.1%}"
        p = "-" if r.p_value is None else f"{r.p_value:.2g}"
        cur = num(r.current) + (f" {r.unit}" if r.unit and r.current is not None else "")
        table.append((r.verdict, r.variant, r.metric, cond, num(r.baseline), cur, change, p, r.reason))
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

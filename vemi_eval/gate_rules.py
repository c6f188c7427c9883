"""The gate's rules: the rules file (TOML) and ``--threshold``, read into typed rules (vemi_eval/gate.py
applies them).

Rules file (TOML; the first matching rule wins; patterns are globs)::

    [default]
    tolerance = 0.10        # relative change allowed in the bad direction (absolute test)
    ratio_tolerance = 0.05  # least relative change of a ratio that fails (the A/A band can widen it)
    alpha = 0.01            # significance for the Mann-Whitney test
    exact_tolerance = 1e-6  # relative change allowed for deterministic metrics
    float_tolerance = 1e-4  # absolute change allowed for deterministic values that are not whole numbers
    [[rules]]
    metric = "lm_step*"     # required
    variant = "*"           # optional
    tolerance = 0.05        # optional; also: alpha, better = "lower" | "higher", ignore = true,
    exact = false           # gate a deterministic metric statistically (another CPU, another BLAS)

A rule's ``tolerance`` applies to the metric whichever test it gets.
"""

from __future__ import annotations

import fnmatch
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import VemiError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_TOLERANCE = 0.10
DEFAULT_ALPHA = 0.01
DEFAULT_EXACT_TOLERANCE = 1e-6
DEFAULT_RATIO_TOLERANCE = 0.05
DEFAULT_FLOAT_TOLERANCE = 0.0


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
    ratio_tolerance: float = DEFAULT_RATIO_TOLERANCE
    float_tolerance: float = DEFAULT_FLOAT_TOLERANCE
    rules: list[Rule] = field(default_factory=list)

    def for_metric(self, variant: str, metric: str) -> MetricRule:
        for r in self.rules:
            if r.matches(variant, metric):
                alpha = self.alpha if r.alpha is None else r.alpha
                return MetricRule(r.tolerance, alpha, r.better, r.ignore, r.exact)
        return MetricRule(None, self.alpha, None, False, None)


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
        known = ("tolerance", "ratio_tolerance", "alpha", "exact_tolerance", "float_tolerance")
        bad = set(default) - set(known)
        if bad:
            raise GateRulesError(f"{p}: [default] unknown key {sorted(bad)[0]!r} ({', '.join(known)})")
        if "tolerance" in default:
            rules.tolerance = parse_fraction(default["tolerance"])
        if "ratio_tolerance" in default:
            rules.ratio_tolerance = parse_fraction(default["ratio_tolerance"])
        if "exact_tolerance" in default:
            rules.exact_tolerance = parse_fraction(default["exact_tolerance"])
        if "float_tolerance" in default:
            rules.float_tolerance = parse_fraction(default["float_tolerance"])
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

"""The gate's verdicts as files CI tools read: JUnit XML (one test case per gated metric) and the
github-action-benchmark "custom" JSON (a list of ``{name, unit, value, range?, extra?}``, one file per
direction: ``tool: customSmallerIsBetter`` reads the lower-is-better metrics, ``customBiggerIsBetter``
the higher-is-better ones)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OptionsError
from .gate import (
    DRIFT,
    EXACT,
    IMPROVED,
    NEW,
    NOT_GATED,
    OK,
    RATIO,
    REDEFINED,
    REGRESSION,
    GateResult,
    GateRow,
)
from .rundir import check_output_file
from .storage import write_atomic

SMALLER, BIGGER = "smaller", "bigger"


def row_name(row: GateRow) -> str:
    """``variant/metric[k=v,...]``: unique within one suite's gate."""
    cond = ",".join(f"{k}={v}" for k, v in sorted(row.condition.items()))
    return f"{row.variant}/{row.metric}" + (f"[{cond}]" if cond else "")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def row_facts(row: GateRow) -> str:
    """Baseline, current, ratio, the test and its outcome in one line (a failure's message)."""
    unit = f" {row.unit}" if row.unit else ""
    parts = [f"baseline {_num(row.baseline)}{unit}", f"current {_num(row.current)}{unit}"]
    if row.ratio is not None:
        parts.append(f"ratio {row.ratio:.4g}")
    if row.test == RATIO and row.baseline_ratio is not None and row.current_ratio is not None:
        parts.append(f"ratio to the run's baseline x{row.baseline_ratio:.4g} -> x{row.current_ratio:.4g}")
    if row.test:
        tol = f"{row.tolerance:.3g}" if row.test == EXACT else f"{row.tolerance:.0%}"
        parts.append(
            f"test {row.test} (tolerance {tol}"
            + (f", p={row.p_value:.2g})" if row.p_value is not None else ")")
        )
    if row.reason:
        parts.append(row.reason)
    return "; ".join(parts)


UNGATED = (NOT_GATED, NEW, REDEFINED)  # neither a failure nor a pass


def junit_xml(result: GateResult) -> str:
    """One ``<testcase>`` per row: a regression is a ``<failure>``, a metric not gated (ignored, new, no
    direction, its measurement redefined) is ``<skipped>``, ok and improved pass. The notes go to the
    suite's ``<system-out>``."""
    suite_name = f"vemi-eval gate: {result.suite}" if result.suite else "vemi-eval gate"
    failures = sum(r.verdict == REGRESSION for r in result.rows)
    skipped = sum(r.verdict in UNGATED for r in result.rows)
    counts = {"tests": str(len(result.rows)), "failures": str(failures), "errors": "0"}
    root = ET.Element("testsuites", {"name": "vemi-eval gate", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": suite_name, **counts, "skipped": str(skipped)})
    for row in result.rows:
        classname = f"vemi_eval.{row.suite or result.suite or 'run'}"
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": row_name(row), "time": "0"})
        facts = row_facts(row)
        if row.verdict == REGRESSION:
            fail = ET.SubElement(case, "failure", {"message": facts, "type": "regression"})
            fail.text = facts
        elif row.verdict in UNGATED:
            ET.SubElement(case, "skipped", {"message": f"{row.verdict}: {row.reason}"})
        elif row.verdict in (OK, IMPROVED, DRIFT):
            out = ET.SubElement(case, "system-out")
            out.text = f"{row.verdict}: {facts}"
    if result.notes:
        ET.SubElement(suite, "system-out").text = "\n".join(result.notes)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


@dataclass
class BenchmarkEntry:
    """One entry of github-action-benchmark's custom format."""

    name: str
    unit: str
    value: float
    range: str | None = None
    extra: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "unit": self.unit, "value": self.value}
        if self.range is not None:
            d["range"] = self.range
        if self.extra is not None:
            d["extra"] = self.extra
        return d


def benchmark_entries(result: GateResult, direction: str) -> list[BenchmarkEntry]:
    """The current run's value of every compared metric judged in that direction (``smaller``: lower is
    better), its interval as ``range`` where the record has one, and the gate's facts as ``extra``."""
    if direction not in (SMALLER, BIGGER):
        raise ValueError(f"direction must be {SMALLER!r} or {BIGGER!r}")
    want = "lower" if direction == SMALLER else "higher"
    out = []
    for row in result.rows:
        if row.current is None or row.better != want or row.metric == "run status":
            continue
        ci = row.current_ci
        out.append(
            BenchmarkEntry(
                name=f"{result.suite}: {row_name(row)}" if result.suite else row_name(row),
                unit=row.unit or "",
                value=float(row.current),
                range=None if ci is None else f"± {(ci[1] - ci[0]) / 2:.4g}",
                extra=f"gate {row.verdict}; {row_facts(row)}",
            )
        )
    return out


def check_writable(path: str | Path, what: str) -> Path:
    """Refuse, in one line and before any work, a path the file cannot be written to."""
    return check_output_file(path, what)


def write_file(path: str | Path, text: str, what: str) -> Path:
    """Write ``text`` to ``path`` whole (a crash leaves the old file or the new one)."""
    p = check_writable(path, what)
    try:
        return write_atomic(p, text)
    except OSError as exc:
        raise OptionsError(f"cannot write {what} {p}: {exc.strerror or exc}") from None


def benchmark_json(entries: list[BenchmarkEntry]) -> str:
    return json.dumps([e.to_dict() for e in entries], indent=1) + "\n"

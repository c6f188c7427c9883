"""The priority matrix as a Markdown table (`vemi-eval matrix --markdown`): one row per measured claim and
context (device, threads, dtype, model, weights, training budget), claim beside measurement, for a README
or a pull request. Values measured in different contexts are never pooled into one row. The HTML report
is the full view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHOWN = 2  # measurements written out per row; the rest are counted


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _claimed(claim: dict[str, Any]) -> str:
    lo, hi = claim.get("claimed_low"), claim.get("claimed_high")
    if lo is None and hi is None:
        return "-"
    if lo is None or hi is None or lo == hi:
        return _num(lo if lo is not None else hi)
    return f"{_num(lo)}-{_num(hi)}"


def _measured(ms: list[dict[str, Any]]) -> str:
    cells = [f"{_num(m['measured'])} [{_num(m.get('ci_low'))}, {_num(m.get('ci_high'))}]" for m in ms[:SHOWN]]
    more = f" (+{len(ms) - SHOWN})" if len(ms) > SHOWN else ""
    return "; ".join(cells) + more


def _mde(row: dict[str, Any]) -> str:
    """The row's largest minimum detectable effect (80% power) and what it is read from."""
    mde = row.get("mde")
    if mde is None:
        return "-"
    basis = next((m.get("mde_basis") for m in row["measurements"] if m.get("mde") == mde), "")
    return f"{mde:.0%}" + (f" ({basis})" if basis else "")


def run_name(path: str) -> str:
    p = Path(path)
    return (p.parent if p.name == "results.json" else p).name


def matrix_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows of ``registry.priority_matrix`` (in the order given) as a Markdown table, one line per claim
    and context; claims that no run measured are left out (the HTML report lists them)."""
    lines = [
        "| id | enhancement | claim | claimed | context | measured (interval) | MDE (80%) | verdict | run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        for c in r["claims"]:
            for row in c.get("rows", []):
                ms = row["measurements"]
                runs = ", ".join(dict.fromkeys(run_name(m["run"]) for m in ms))
                cells = [r["id"], r["title"], c["text"], _claimed(c), row["context"], _measured(ms),
                         _mde(row), row["verdict"], runs]  # fmt: skip
                lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines)

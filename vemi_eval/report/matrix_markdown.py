"""The priority matrix as a Markdown table (`vemi-eval matrix --markdown`): one row per measured claim,
claim beside measurement, for a README or a pull request. The HTML report is the full view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHOWN = 2  # measurements written out per claim; the rest are counted


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


def _run_name(path: str) -> str:
    p = Path(path)
    return (p.parent if p.name == "results.json" else p).name


def matrix_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows of ``registry.priority_matrix`` (in the order given) as a Markdown table; claims that no run
    measured are left out (the HTML report lists them)."""
    lines = [
        "| id | enhancement | claim | claimed | measured (interval) | verdict | run |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        for c in r["claims"]:
            ms = c["measurements"]
            if not ms:
                continue
            runs = ", ".join(dict.fromkeys(_run_name(m["run"]) for m in ms))
            cells = [r["id"], r["title"], c["text"], _claimed(c), _measured(ms), c["verdict"], runs]
            lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines)

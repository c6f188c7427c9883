"""One metric's trend across the runs of the SQLite history, as a self-contained HTML page (a plot per
unit, one line per (suite, variant, condition), and the table beneath it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..storage import write_atomic
from . import plots


def trend_lines(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Series for plots.sweep: x = run id, y = value, the interval where recorded."""
    lines: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("value") is None:
            continue
        cond = json.loads(r.get("condition_json") or "{}")
        label = f"{r.get('suite')}: {r['variant']}" + (
            f" ({', '.join(f'{k}={v}' for k, v in cond.items())})" if cond else ""
        )
        line = lines.setdefault(label, {"label": label, "x": [], "y": [], "lo": [], "hi": []})
        line["x"].append(float(r["run_id"]))
        line["y"].append(float(r["value"]))
        line["lo"].append(r.get("ci_low"))
        line["hi"].append(r.get("ci_high"))
    return list(lines.values())


def build_history_page(metric: str, rows: list[dict[str, Any]], out: Path, source: Path) -> Path:
    """Write the page and return its path."""
    from . import render

    lines = trend_lines(rows)
    unit = next((r.get("unit") for r in rows if r.get("unit")), "") or ""
    figure = None
    if lines:
        uri = plots.sweep(lines[:40], x_key="run (history id)", metric=metric, unit=unit)
        figure = {"uri": uri, "caption": f"{metric} across the runs of {source}"}
    table = [
        [str(r["run_id"]), str(r.get("started") or "")[:19], str(r.get("git_commit") or "")[:10],
         str(r.get("suite") or ""), str(r["variant"]), r.get("condition_json") or "{}",
         "-" if r.get("value") is None else f"{r['value']:.4g}",
         "" if r.get("ci_low") is None else f"[{r['ci_low']:.4g}, {r['ci_high']:.4g}]",
         "" if r.get("ratio_to_baseline") is None else f"x{r['ratio_to_baseline']:.3g}",
         str(r.get("status") or "")]
        for r in rows
    ]  # fmt: skip
    page = render(
        "history.html.j2",
        title=f"vemi-eval history: {metric}",
        source=str(source),
        figure=figure,
        more=max(0, len(lines) - 40),
        header=[
            "run",
            "started",
            "commit",
            "suite",
            "variant",
            "condition",
            "value",
            "95% CI",
            "vs baseline",
            "status",
        ],  # fmt: skip
        rows=table,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page)
    return out

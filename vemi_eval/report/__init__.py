"""The HTML report: one self-contained file (opens offline) from one or several run directories.

    build_report([Path("runs/latency-..."), Path("runs/latency-...")], Path("report.html"))

Several runs are shown side by side (their variants become columns of each suite's tables).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import html as page_html

log = logging.getLogger(__name__)

__all__ = ["build_report", "load_run"]


def _labels(paths: list[Path]) -> list[str]:
    """Short distinct names for the runs: the directory names (with their parent where they clash)."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" for p in paths]


def load_run(run_dir: Path, label: str) -> dict[str, Any]:
    """results.json (checked) and samples.csv (optional) of one run directory."""
    from ..results import SAMPLES_FILE, read_results

    doc = read_results(run_dir)
    samples = None
    csv = Path(doc["_path"]).parent / SAMPLES_FILE
    if csv.is_file():
        import pandas as pd

        try:
            samples = pd.read_csv(csv, low_memory=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            log.warning("samples.csv of %s unreadable: %s", run_dir, exc)
    metrics = doc["metrics"]
    variants = [v["name"] for v in doc.get("variants", [])]
    for m in metrics:  # variants that only appear in records (a run dir written by hand, an old schema)
        if m["variant"] not in variants:
            variants.append(m["variant"])
    data_hashes = dict(doc.get("data") or {})
    budgets = []
    for m in metrics:
        extra = m.get("extra") or {}
        for k, v in extra.items():
            if k.endswith("_sha256") and isinstance(v, str):
                data_hashes.setdefault(k.removesuffix("_sha256"), v)
        if m.get("extra", {}).get("kind") == "latency" and extra.get("budget_ms"):
            budgets.append(float(extra["budget_ms"]))
    return {
        "label": label,
        "doc": doc,
        "metrics": metrics,
        "variants": variants,
        "samples": samples,
        "data_hashes": data_hashes,
        "budgets": sorted(set(budgets)),
    }


def build_report(run_dirs: Sequence[Path | str], out_html: Path | str) -> Path:
    """Write the report of ``run_dirs`` to ``out_html`` and return its path."""
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise ValueError("build_report needs at least one run directory")
    runs = [load_run(p, label) for p, label in zip(paths, _labels(paths), strict=True)]
    suites: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        name = (run["doc"].get("suite") or {}).get("name") or "suite"
        suites.setdefault(name, []).append(run)

    title = "vemi-eval report: " + ", ".join(suites)
    page = page_html.Page(title)
    page_html.header(page, runs)
    page_html.summary(page, runs)

    for name, suite_runs in suites.items():
        sections = {
            "forest": page_html.forest_figures(name, suite_runs),
            "sweeps": page_html.sweep_figures(suite_runs),
            "latency": page_html.latency_figures(suite_runs),
        }
        page_html.suite_section(page, name, suite_runs, sections)
    matrix_rows, why = None, ""
    try:
        from .. import registry

        matrix_rows = registry.priority_matrix([r["doc"] for r in runs])
    except ImportError as exc:
        why = f"the enhancement registry is not available: {exc}"
    page_html.matrix(page, matrix_rows, why)
    page_html.problems(page, runs)
    page_html.environment(page, runs)

    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page.render(), encoding="utf-8")
    return out

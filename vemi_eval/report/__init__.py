"""The HTML report: one self-contained file (opens offline) from one or several run directories.

    build_report([Path("runs/latency-..."), Path("runs/latency-...")], Path("report.html"))

Several runs are shown side by side (their variants become columns of each suite's tables). The page is
templates/report.html.j2 (jinja2, autoescaped) filled with what view.py computes from the runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..storage import write_atomic
from . import matrix_view, view

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
        for name, sha in (m.get("data") or {}).items():
            data_hashes.setdefault(name, sha)
        if m.get("kind") == "latency" and m.get("budget_ms"):
            budgets.append(float(m["budget_ms"]))
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
    sections = []
    for name, suite_runs in suites.items():
        table = view.suite_table(name, suite_runs)
        table["forest"] = [view.figure(u, c) for u, c in view.forest_figures(name, suite_runs)]
        table["sweeps"] = [view.figure(u, c) for u, c in view.sweep_figures(suite_runs)]
        table["latency"] = [view.figure(u, c) for u, c in view.latency_figures(suite_runs)]
        table["by_voice"] = view.by_voice_table(suite_runs)
        table["by_engine"] = view.by_engine_table(suite_runs)
        sections.append(table)
    measured, lead, why = None, None, ""
    try:
        from .. import registry

        measured = registry.priority_matrix([r["doc"] for r in runs])
        lead = matrix_view.matrix_lead(measured, registry.priority_order(), runs)
    except ImportError as exc:
        why = f"the enhancement registry is not available: {exc}"
    toc = [("lead", "What was measured"), ("runs", "Runs"), ("noise", "A/A noise floor")]
    toc += [("summary", "Summary")]
    toc += [(s["anchor"], f"Suite: {s['name']}") for s in sections]
    toc += [("problems", "Failures, skips, invalid and underpowered records"), ("environment", "Environment")]
    page = render(
        "report.html.j2",
        title=title,
        toc=toc,
        banners=view.banners(runs),
        headlines=view.headlines(runs, measured),
        lead=lead,
        noise=view.noise_floor(runs),
        runs=view.header(runs),
        summary=view.summary(runs),
        suites=sections,
        matrix_missing=why,
        problems=view.problems(runs),
        environments=view.environment(runs),
    )
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page)
    return out


def render(template: str, **context: Any) -> str:
    """A template of this package's templates/ folder, autoescaped."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vemi_eval.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=lambda v: "" if v is None else v,  # a missing fact shows as nothing, not "None"
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(template).render(**context)

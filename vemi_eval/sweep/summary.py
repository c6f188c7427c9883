"""sweep.json: each point's status, host, error and ratios to its baseline, rewritten as runs finish."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..environment import git_state, now_iso
from ..rundir import FINISHED, INCOMPLETE, INVALID, SWEEP_FILE, VALID  # noqa: F401  (sweep.json's)
from ..storage import write_atomic
from .worker import FAILED  # noqa: F401  (a status of sweep.json)

if TYPE_CHECKING:
    from .plan import SweepPlan, SweepPoint


SWEEP_SCHEMA = "vemi-eval/sweep"
SWEEP_SCHEMA_VERSION = 1


PENDING, INTERRUPTED = "PENDING", "INTERRUPTED"


def new_summary(
    plan: SweepPlan, suite: Any, out: Path, entries: dict[str, dict[str, Any]], ray: Any
) -> dict[str, Any]:
    return {
        "schema": SWEEP_SCHEMA,
        "schema_version": SWEEP_SCHEMA_VERSION,
        "suite": {
            "name": suite.name,
            "path": str(suite.path) if suite.path else None,
            "sha256": suite.sha256,
        },
        "baseline": {"name": suite.variants[0].name, "flags": list(suite.variants[0].flags)},
        "sweep_file": plan.source,
        "description": plan.description,
        "options": plan.run_fields(),
        "started": now_iso(),
        "finished": None,
        "driver": {"host": socket.gethostname(), **git_state()},
        "ray": {"version": getattr(ray, "__version__", None)},
        "skipped": plan.skipped,
        "counts": counts(entries),
        "report": None,
        "points": list(entries.values()),
    }


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    summary["counts"] = counts({e["slug"]: e for e in summary["points"]})
    write_atomic(out / SWEEP_FILE, json.dumps(summary, indent=1, default=str) + "\n")


def counts(entries: dict[str, dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in entries.values():
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    return counts


def from_run(entry: dict[str, Any], doc: dict[str, Any]) -> None:
    """What the run's results.json says: the seed and device it ran with, the ratios it measured."""
    entry["run_seed"] = doc.get("seed")
    entry["run_device"] = (doc.get("model") or {}).get("device")
    entry["metrics"] = key_metrics(doc)


def key_metrics(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The variant's records that have a ratio to the baseline (measured side by side in that run)."""
    base = next((v["name"] for v in doc.get("variants", []) if v.get("is_baseline")), None)
    keys = ("metric", "condition", "value", "unit", "ratio_to_baseline", "ratio_ci_low", "ratio_ci_high")
    out = []
    for m in doc.get("metrics", []):
        if m.get("variant") == base or m.get("ratio_to_baseline") is None:
            continue
        out.append({**{k: m.get(k) for k in keys}, "status": m.get("status")})
    return out


def comparison_rows(entries: Sequence[dict[str, Any]], limit: int = 30) -> tuple[list[dict[str, str]], int]:
    """Metric (+ condition) x run: the ratio to that run's own baseline; the first ``limit`` rows."""
    table: dict[str, dict[str, str]] = {}
    for e in entries:
        for m in e.get("metrics") or []:
            cond = ",".join(f"{k}={v}" for k, v in (m.get("condition") or {}).items())
            key = m["metric"] + (f" [{cond}]" if cond else "")
            cell = f"x{m['ratio_to_baseline']:.3g}"
            if m.get("ratio_ci_low") is not None:
                cell += f" [{m['ratio_ci_low']:.3g},{m['ratio_ci_high']:.3g}]"
            table.setdefault(key, {"metric": key})[e["slug"]] = cell
    rows = list(table.values())
    return rows[:limit], max(0, len(rows) - limit)


def progress_line(done: int, total: int, p: SweepPoint, e: dict[str, Any]) -> str:
    where = f" on {e['host']}" if e.get("host") else ""
    took = f" in {e['wall_s']:.1f} s" if isinstance(e.get("wall_s"), (int, float)) else ""
    line = f"[{done}/{total}] {p.slug}: {e['status']}{where}{took}"
    if e.get("error"):
        line += f": {e['error']}"
    if e.get("code_mismatch"):
        line += f" (warning: {e['code_mismatch']})"
    return line

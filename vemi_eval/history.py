"""An append-only SQLite history of runs: every run adds one row to ``runs`` and its records to ``metrics``.

Nothing is ever updated or deleted, so the history of a metric across commits is a plain query:

    SELECT r.git_commit, r.started, m.value FROM metrics m JOIN runs r USING (run_id)
    WHERE m.metric = 'lm_step_ms_p50' AND m.variant = 'baseline' ORDER BY r.started;
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from .errors import OptionsError
from .records import upgrade_metric

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    out_dir TEXT,
    suite TEXT,
    suite_sha256 TEXT,
    status TEXT,
    started TEXT,
    finished TEXT,
    git_commit TEXT,
    git_dirty INTEGER,
    hostname TEXT,
    cpu TEXT,
    gpu TEXT,
    device TEXT,
    seed INTEGER,
    quick INTEGER,
    threads INTEGER,
    model_json TEXT,
    variants_json TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    suite TEXT,
    variant TEXT,
    kind TEXT,
    metric TEXT,
    condition_json TEXT,
    value REAL,
    unit TEXT,
    n INTEGER,
    ci_low REAL,
    ci_high REAL,
    status TEXT,
    reason TEXT,
    higher_is_better INTEGER,
    ratio_to_baseline REAL,
    ratio_ci_low REAL,
    ratio_ci_high REAL
);
CREATE INDEX IF NOT EXISTS metrics_by_name ON metrics (metric, variant);
"""


def default_history_path() -> Path:
    env = os.environ.get("VEMI_HISTORY")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "vemi-eval" / "history.sqlite"


def connect(path: Path | None = None) -> sqlite3.Connection:
    path = Path(path) if path else default_history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(path), timeout=30)
    con.executescript(_SCHEMA)
    return con


def check_history(path: Path | None = None) -> Path:
    """Open (or create) the history and its tables before any work: a history that is not a database,
    cannot be created or cannot be written is one line (exit 2) instead of a failure after the run."""
    where = Path(path) if path else default_history_path()
    try:
        con = connect(where)
        try:
            con.execute("PRAGMA quick_check").fetchone()
            con.execute("BEGIN IMMEDIATE")  # takes the write lock: a read-only file fails here
            con.rollback()
        finally:
            con.close()
    except (sqlite3.Error, OSError) as exc:
        raise OptionsError(f"history {where}: {exc} (--history elsewhere, or --no-history)") from None
    return where


def append_run(
    results: dict[str, Any], out_dir: str | os.PathLike | None = None, path: Path | None = None
) -> int:
    """Add a run (a results.json document) to the history; return its run_id."""
    env = results.get("environment", {})
    model = results.get("model", {})
    con = connect(path)
    try:
        with con:
            cur = con.execute(
                "INSERT INTO runs (out_dir, suite, suite_sha256, status, started, finished, git_commit,"
                " git_dirty, hostname, cpu, gpu, device, seed, quick, threads, model_json, variants_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(out_dir) if out_dir is not None else None,
                    results.get("suite", {}).get("name"),
                    results.get("suite", {}).get("sha256"),
                    results.get("status"),
                    results.get("started"),
                    results.get("finished"),
                    env.get("git_commit"),
                    None if env.get("git_dirty") is None else int(bool(env.get("git_dirty"))),
                    env.get("hostname"),
                    env.get("cpu"),
                    env.get("gpu"),
                    model.get("device"),
                    results.get("seed"),
                    int(bool(results.get("quick"))),
                    results.get("threads"),
                    json.dumps(model, sort_keys=True),
                    json.dumps(results.get("variants", []), sort_keys=True),
                ),
            )
            run_id = int(cur.lastrowid)
            con.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_metric_row(run_id, m) for m in results.get("metrics", [])],
            )
    finally:
        con.close()
    return run_id


def _metric_row(run_id: int, m: dict[str, Any]) -> tuple:
    hib = m.get("higher_is_better")
    return (
        run_id,
        m.get("suite"),
        m.get("variant"),
        upgrade_metric(m).get("kind"),
        m.get("metric"),
        json.dumps(m.get("condition") or {}, sort_keys=True, default=str),
        m.get("value"),
        m.get("unit"),
        m.get("n"),
        m.get("ci_low"),
        m.get("ci_high"),
        m.get("status"),
        m.get("reason"),
        None if hib is None else int(bool(hib)),
        m.get("ratio_to_baseline"),
        m.get("ratio_ci_low"),
        m.get("ratio_ci_high"),
    )


def runs(path: Path | None = None, suite: str | None = None) -> list[dict[str, Any]]:
    """Every run in the history (oldest first), optionally of one suite."""
    con = connect(path)
    con.row_factory = sqlite3.Row
    try:
        q = "SELECT * FROM runs" + (" WHERE suite = ?" if suite else "") + " ORDER BY run_id"
        return [dict(r) for r in con.execute(q, (suite,) if suite else ())]
    finally:
        con.close()


def metric_history(
    metric: str, variant: str | None = None, path: Path | None = None, suite: str | None = None
) -> list[dict[str, Any]]:
    """One metric across runs (oldest first): run_id, started, git_commit, suite, variant, value, ci,
    ratio to its run's baseline, status, condition."""
    con = connect(path)
    con.row_factory = sqlite3.Row
    try:
        q = (
            "SELECT m.run_id, r.started, r.git_commit, r.suite, r.status AS run_status, m.variant, m.value,"
            " m.unit, m.ci_low, m.ci_high, m.ratio_to_baseline, m.ratio_ci_low, m.ratio_ci_high, m.status,"
            " m.condition_json FROM metrics m JOIN runs r USING (run_id) WHERE m.metric = ?"
        )
        args: tuple = (metric,)
        if variant is not None:
            q += " AND m.variant = ?"
            args += (variant,)
        if suite is not None:
            q += " AND r.suite = ?"
            args += (suite,)
        return [dict(r) for r in con.execute(q + " ORDER BY m.run_id", args)]
    finally:
        con.close()

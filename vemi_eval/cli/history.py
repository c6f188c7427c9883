"""`vemi-eval history`: the runs the SQLite history holds, and one metric's trend across them.

    vemi-eval history                                   # every run: id, date, suite, status, commit, dir
    vemi-eval history --suite dialogue                  # the runs of one suite
    vemi-eval history --metric answer_accuracy [--variant baseline] [--out trend.html]

The history is only read (never created or changed here); a file that is not a history is one line,
exit 2.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_OK, OptionsError, StorageError
from ..text_table import echo_table as _table
from .options import EXIT_CODES_HELP as EPILOG


def _readable(path: Path) -> Path:
    """The history file, opened read-only once to check it is one (exit 2 otherwise)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            con.execute("SELECT run_id FROM runs LIMIT 1").fetchall()
            con.execute("SELECT run_id FROM metrics LIMIT 1").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise OptionsError(f"history {path}: not a vemi-eval history ({exc})") from None
    return path


def trend_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The metric's records as table rows: run, date, commit, variant, condition, value [CI], ratio."""
    out = []
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.4g}"
        if r.get("ci_low") is not None and r.get("ci_high") is not None:
            value += f" [{r['ci_low']:.4g}, {r['ci_high']:.4g}]"
        ratio = "" if r.get("ratio_to_baseline") is None else f"x{r['ratio_to_baseline']:.3g}"
        cond = json.loads(r.get("condition_json") or "{}")
        out.append(
            {
                "run": str(r["run_id"]),
                "started": str(r.get("started") or "")[:19],
                "commit": str(r.get("git_commit") or "")[:10],
                "suite": str(r.get("suite") or ""),
                "variant": str(r["variant"]),
                "condition": ",".join(f"{k}={v}" for k, v in cond.items()),
                "value": value + (f" {r['unit']}" if r.get("unit") and r["value"] is not None else ""),
                "vs baseline": ratio,
                "status": str(r.get("status") or ""),
            }
        )
    return out


@click.command("history", epilog=EPILOG)
@click.option("--metric", help="One metric's values across the runs (its trend) instead of the run list.")
@click.option("--suite", help="Only the runs of this suite.")
@click.option("--variant", help="With --metric: only this variant.")
@click.option(
    "--history",
    "history_path",
    type=click.Path(dir_okay=False),
    help="The history file (default: $VEMI_HISTORY, else ~/.cache/vemi-eval/history.sqlite).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="With --metric: also write the trend as a plot in a self-contained HTML page.",
)
def history_command(
    metric: str | None, suite: str | None, variant: str | None, history_path: str | None, out: str | None
) -> int:
    """The runs the history holds (every `vemi-eval run` appends one), or one metric's trend."""
    from .. import history

    if (variant or out) and not metric:
        raise click.UsageError("--variant and --out go with --metric")
    path = Path(history_path) if history_path else history.default_history_path()
    if out is not None:
        from ..rundir import check_output_file

        check_output_file(Path(out), "history page", create_folder=True)
    if not path.is_file():
        click.echo(f"no history at {path} yet: every `vemi-eval run` appends to it (--no-history: not)")
        return EXIT_OK
    _readable(path)
    if not metric:
        runs = history.runs(path, suite)
        _table(
            [
                {
                    "run": r["run_id"],
                    "started": str(r.get("started") or "")[:19],
                    "suite": r.get("suite") or "",
                    "status": r.get("status") or "",
                    "quick": "quick" if r.get("quick") else "",
                    "commit": str(r.get("git_commit") or "")[:10],
                    "device": r.get("device") or "",
                    "run directory": r.get("out_dir") or "",
                }
                for r in runs
            ],
            ["run", "started", "suite", "status", "quick", "commit", "device", "run directory"],
        )
        click.echo(f"{len(runs)} run(s) in {path}")
        return EXIT_OK
    rows = history.metric_history(metric, variant, path, suite=suite)
    if not rows:
        click.echo(f"no record of metric {metric!r} in {path}" + (f" (suite {suite})" if suite else ""))
        return EXIT_OK
    table = trend_rows(rows)
    _table(table, list(table[0]))
    if out is not None:
        from ..report.history_page import build_history_page

        try:
            written = build_history_page(metric, rows, Path(out), source=path)
        except OSError as exc:
            raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from None
        click.echo(f"trend plot: {written.resolve()}")
    return EXIT_OK

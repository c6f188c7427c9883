"""One run of a suite with what follows it: its report and its line in the history.

The runner (vemi_eval/runner.py) measures and writes the run's files; the report and the history read
results, a layer above it, so they are run from here, through the runner's ``finish`` (the run's log still
attached, so their failures are in run.log).
"""

from __future__ import annotations

import logging
import sqlite3
import traceback
from collections.abc import Callable
from pathlib import Path

from . import history
from .errors import StorageError
from .run_results import RunResults
from .rundir import LOG_FILE, REPORT_FILE
from .runner import RunOptions, RunOutcome, execute_run, prepare_run

log = logging.getLogger("vemi_eval.run")


def run_suite(opts: RunOptions, echo: Callable[[str], None] = print) -> RunOutcome:
    """Run a suite, then build its report (``opts.report``) and add it to the history (``opts.history``);
    a user error (exit 2) before any work when the input is bad, the history's included."""
    job = prepare_run(opts)
    if opts.history:
        history.check_history(opts.history_path)

    def finish(results: RunResults) -> Path | None:
        report = build_run_report(job.out, echo) if opts.report else None
        if opts.history:
            append_to_history(results, job.out, opts.history_path)
        return report

    return execute_run(job, opts, finish)


def append_to_history(results: RunResults, out: Path, path: Path | None) -> None:
    try:
        run_id = history.append_run(results.to_dict(), out_dir=out.resolve(), path=path)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"the run is complete in {out} but was not added to the history: {exc}") from None
    log.info("history: run %d appended", run_id)


def build_run_report(out: Path, echo: Callable[[str], None]) -> Path | None:
    """The run's report.html; a report that fails is a warning, never a lost run (the results are on disk)."""
    try:
        from .report import build_report
    except ImportError as exc:
        log.warning("report not built: %s", exc)
        echo(f"note: report not built (vemi_eval.report unavailable: {exc})")
        return None
    try:
        return Path(build_report([out], out / REPORT_FILE))
    except Exception as exc:  # a broken report must not lose the run: the results are on disk
        log.error("report failed:\n%s", traceback.format_exc())
        echo(f"warning: report not built: {type(exc).__name__}: {exc} (traceback in {out / LOG_FILE})")
        return None

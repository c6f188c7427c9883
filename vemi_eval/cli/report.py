"""`vemi-eval report RUN_DIR...`: one self-contained HTML report of one or more runs."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import EXIT_OK, ResultsError, StorageError
from .options import EXIT_CODES_HELP


@click.command("report", epilog=EXIT_CODES_HELP)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="HTML file (default: RUN_DIR/report.html for one run, ./report.html for several; the path "
    "written is printed).",
)
def report_cmd(run_dirs: tuple[str, ...], out: str | None) -> int:
    """Build one self-contained HTML report from one or more run directories."""
    from ..results import results_path
    from ..rundir import check_output_file

    dirs = [results_path(d).parent for d in run_dirs]
    target = Path(out) if out else (dirs[0] / "report.html" if len(dirs) == 1 else Path("report.html"))
    check_output_file(target, "report", create_folder=True)
    try:
        from ..report import build_report
    except ImportError as exc:
        raise ResultsError(f"the report module is not available: {exc}") from None
    try:
        path = build_report(dirs, target)
    except OSError as exc:  # the folder filled up or went away while the report was built
        raise StorageError(f"cannot write report {target}: {exc.strerror or exc}") from None
    where = "" if out else " (the default for " + ("one run" if len(dirs) == 1 else "several runs") + ")"
    click.echo(f"report: {Path(path).resolve()}{where}")
    return EXIT_OK

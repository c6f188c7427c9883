"""`vemi-eval gate RUN_DIR --baseline B`: the regression gate, and the files it writes for CI."""

from __future__ import annotations

import click

from ..errors import EXIT_GATE_FAILED, EXIT_OK
from .options import EXIT_CODES_HELP


@click.command("gate", epilog=EXIT_CODES_HELP)
@click.argument("run_dir", type=click.Path())
@click.option(
    "--baseline",
    required=True,
    type=click.Path(),
    help="Baseline run directory or results.json (e.g. a committed one).",
)
@click.option(
    "--rules", type=click.Path(dir_okay=False), help="TOML rules: per-metric tolerance, alpha, direction."
)
@click.option(
    "--threshold",
    multiple=True,
    help="Default tolerance (10% or 0.1), or PATTERN=TOL for metrics matching a glob. Repeatable.",
)
@click.option("--all", "show_all", is_flag=True, help="Show every compared metric, not only changes.")
@click.option(
    "--junit", type=click.Path(dir_okay=False), help="Also write JUnit XML: one test case per gated metric."
)
@click.option(
    "--benchmark-json",
    type=click.Path(dir_okay=False),
    help="Also write the lower-is-better metrics for github-action-benchmark (tool: customSmallerIsBetter).",
)
@click.option(
    "--benchmark-json-bigger",
    type=click.Path(dir_okay=False),
    help="Also write the higher-is-better metrics for github-action-benchmark (tool: customBiggerIsBetter).",
)
def gate_cmd(
    run_dir: str,
    baseline: str,
    rules: str | None,
    threshold: tuple[str, ...],
    show_all: bool,
    junit: str | None,
    benchmark_json: str | None,
    benchmark_json_bigger: str | None,
) -> int:
    """Regression gate: compare RUN_DIR against a baseline, metric by metric: deterministic metrics
    exactly, timings by tolerance + Mann-Whitney U on raw samples when both have them. Exit 1 on a
    regression."""
    from .. import gate_files
    from ..gate import format_table, run_gate

    outputs = {junit: "JUnit XML", benchmark_json: "benchmark JSON", benchmark_json_bigger: "benchmark JSON"}
    for path, what in outputs.items():
        if path:
            gate_files.check_writable(path, what)
    result = run_gate(run_dir, baseline, rules, threshold)
    click.echo(format_table(result, show_all=show_all))
    if junit:
        gate_files.write_file(junit, gate_files.junit_xml(result), "JUnit XML")
    for path, direction in ((benchmark_json, gate_files.SMALLER), (benchmark_json_bigger, gate_files.BIGGER)):
        if path:
            entries = gate_files.benchmark_entries(result, direction)
            gate_files.write_file(path, gate_files.benchmark_json(entries), "benchmark JSON")
    return EXIT_GATE_FAILED if result.failed else EXIT_OK

"""`vemi-eval sweep`: the command line of a sweep and its printed summary."""

from __future__ import annotations

from pathlib import Path

import click

from ..sweep.driver import SweepOptions, SweepOutcome, run_sweep
from ..sweep.plan import build_plan, parse_int_list
from ..sweep.summary import SWEEP_FILE, comparison_rows
from ..sweep.sweepfile import check_device
from .options import OutputSettings, check_at_least, model_options, output_options

SWEEP_HELP = """Run SUITE over a grid of flag sets on Ray: each variant in a task of its own, beside the
suite's baseline (every ratio is measured side by side on one machine, never across machines).

\b
TARGET is a suite (a name or a path) or a sweep file (TOML with a [sweep] table; see
suites/sweeps/). Variants: --grid "int8=rtn;int8=gptq;int4=awq,attn=sdpa" (';' separates
flag sets, ',' joins the flags of one set), the sweep file's [[variants]] and [grid] product,
else the suite's own variants. Each runs once per --seeds value and per --devices value.

\b
Ray: --address joins a cluster (`ray start --head` elsewhere); by default a local Ray instance
starts with --local-cpus CPUs. Each run reserves --num-cpus CPUs (default: its threads) and one GPU
when its device is cuda. Runs that share a machine share its cores: for timing suites reserve the
cores a run must have to itself (--num-cpus), or the timings of neighbours interfere.

\b
Output: OUT/<variant>/ (a run directory as `vemi-eval run` writes), OUT/sweep.json (each run's
status, host, error, ratios) and OUT/report.html (all runs side by side). A run that fails is
reported with its error and the others go on; --resume skips the finished runs and continues the
partial ones.
"""


SWEEP_EXIT_CODES = """\b
Exit codes:
  0    every run VALID
  2    bad usage or bad input (one line on stderr), or Ray is not installed
  3    every run finished, at least one is INVALID
  4    at least one run failed or is INCOMPLETE (errors printed; `--resume` redoes only those)
  5    sweep.json or a run's files could not be written (disk full...)
  130  interrupted (finished runs are on disk; `--resume` continues)
"""


@click.command("sweep", help=SWEEP_HELP, epilog=SWEEP_EXIT_CODES)
@click.argument("target")
@click.option("--grid", multiple=True, help='Flag sets: "int8=rtn;int8=gptq;int4=awq". Repeatable.')
@click.option("--seeds", help="Comma-separated seeds; each variant runs once per seed.")
@click.option("--devices", help="Comma-separated devices (cpu, cuda); each variant runs once per device.")
@model_options(where="the same path on every node")
@click.option("--threads", type=int, help="torch threads per run (default: the suite's, else 1).")
@click.option("--quick", is_flag=True, help="The suite's quick settings.")
@click.option(
    "--data", type=click.Path(), help="Data directory for the quality measurements (on every node)."
)
@output_options("sweep", default_out="runs/sweep-SUITE-TIME")
@click.option("--address", help="Ray cluster address to join (e.g. ray://head:10001, or auto).")
@click.option("--local-cpus", type=int, help="CPUs of the local Ray instance (default: this machine's).")
@click.option("--num-cpus", type=float, help="CPUs reserved per run (default: its threads).")
@click.option("--num-gpus", type=float, default=1.0, show_default=True, help="GPUs reserved per cuda run.")
@click.option(
    "--retries",
    type=int,
    default=1,
    show_default=True,
    help="Ray retries of a run whose worker died (crash, OOM kill, node lost); a failed run is not retried.",
)
def sweep_command(
    target: str,
    grid: tuple[str, ...],
    seeds: str | None,
    devices: str | None,
    preset: str | None,
    config: str | None,
    checkpoint: str | None,
    codec_checkpoint: str | None,
    threads: int | None,
    quick: bool,
    data: str | None,
    output: OutputSettings,
    address: str | None,
    local_cpus: int | None,
    num_cpus: float | None,
    num_gpus: float,
    retries: int,
) -> int:
    check_at_least(0, num_cpus=num_cpus, num_gpus=num_gpus, retries=retries)
    check_at_least(1, threads=threads)
    plan = build_plan(
        target,
        grid=grid,
        seeds=parse_int_list(seeds, "--seeds") if seeds else None,
        devices=[check_device(d, "--devices") for d in devices.split(",") if d.strip()] if devices else None,
        overrides={
            "preset": preset,
            "config": str(Path(config).resolve()) if config else None,
            "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
            "codec_checkpoint": str(Path(codec_checkpoint).resolve()) if codec_checkpoint else None,
            "threads": threads,
            "data": str(Path(data).resolve()) if data else None,
        },
        quick=quick,
    )
    opts = SweepOptions(
        **output.fields(),
        address=address,
        local_cpus=local_cpus,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        retries=retries,
    )
    outcome = run_sweep(plan, opts, echo=lambda m: click.echo(m, err=True))
    print_summary(outcome)
    return outcome.exit_code


def print_summary(outcome: SweepOutcome) -> None:
    s = outcome.summary
    points = s["points"]
    click.echo(f"sweep of {s['suite']['name']}: {len(points)} runs beside baseline {s['baseline']['name']!r}")
    for e in points:
        where = e.get("host") or "-"
        line = f"  {e['slug']:<28} {e['status']:<11} {where}"
        if e.get("resumed"):
            line += "  (finished before, kept)"
        if e.get("error"):
            line += f"  {e['error']}"
        click.echo(line)
    for sk in s.get("skipped") or []:
        click.echo(f"  left out: {sk['variant']}: {sk['reason']}")
    rows, more = comparison_rows(points)
    if rows:
        click.echo("\nratio to the baseline of the same run:")
        cols = ["metric"] + [e["slug"] for e in points]
        widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
        click.echo("  ".join(c.ljust(widths[c]) for c in cols))
        for r in rows:
            click.echo("  ".join(r.get(c, "").ljust(widths[c]) for c in cols))
        if more:
            click.echo(f"... {more} more rows in {SWEEP_FILE} and the report")
    click.echo(
        f"\nsweep directory: {outcome.out_dir}  ({SWEEP_FILE}" + (", report.html)" if outcome.report else ")")
    )

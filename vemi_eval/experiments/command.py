"""`vemi-eval experiment run FILE` and `vemi-eval experiment list`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import EXIT_CODES, EXIT_INCOMPLETE, EXIT_OK

EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES.items())

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent.parent / "suites" / "experiments"


@click.group("experiment")
def experiment_command() -> None:
    """Paired training experiments of the training-side enhancements (suites/experiments/*.toml)."""


@experiment_command.command("list")
def list_cmd() -> int:
    """The experiment files: enhancement, trainer, arms, steps x seeds."""
    from .spec import read_experiment

    for path in sorted(EXPERIMENTS_DIR.glob("*.toml")):
        e = read_experiment(path)
        arms = ", ".join(f"{a.name}[{'+'.join(a.options) or '-'}]" for a in e.arms)
        click.echo(
            f"{e.name:24s} {e.enhancement:5s} {e.trainer:6s} {e.steps} steps x seeds {list(e.seeds)}: {arms}"
        )
    return EXIT_OK


@experiment_command.command("run", epilog=EXIT_CODES_HELP)
@click.argument("file")
@click.option(
    "--checkpoints",
    type=click.Path(),
    help="Where the trainings go (default runs/experiments/trainings: shared by all).",
)
@click.option("--out", type=click.Path(), help="The measuring run (default reports/experiments/NAME).")
@click.option("--train-only", is_flag=True, help="Train the arms, do not measure.")
@click.option("--quick", is_flag=True, help="The measuring suite's quick settings.")
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads per training and run.")
@click.option("--device", default="cpu", show_default=True, help="Where the trainings run: cpu | cuda.")
@click.option(
    "--ray", "use_ray", is_flag=True, help="Each arm x seed as a Ray task (a local instance or --address)."
)
@click.option("--address", help="A Ray cluster to join (implies --ray).")
@click.option("--resume", is_flag=True, help="Continue the run in --out (automatic when unfinished).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier measuring run in --out.")
def run_cmd(
    file: str, checkpoints: str | None, out: str | None, train_only: bool, quick: bool, threads: int,
    device: str, use_ray: bool, address: str | None, resume: bool, overwrite: bool,
) -> int:  # fmt: skip
    """Train every arm x seed of FILE (a name in suites/experiments/ or a path), then measure the arms
    side by side: one variant per arm, its seeds pooled as replicates."""
    from .. import results as rs
    from ..runner import RunOptions, run_suite
    from .spec import read_experiment
    from .suite import measuring_suite
    from .train import TrainingFailed, plan_trainings, train_all

    path = Path(file)
    if not path.is_file() and (EXPERIMENTS_DIR / f"{file}.toml").is_file():
        path = EXPERIMENTS_DIR / f"{file}.toml"
    exp = read_experiment(path)
    folder = Path("runs") / "experiments" / exp.name  # the generated measuring suite
    trainings = Path(checkpoints) if checkpoints else Path("runs") / "experiments" / "trainings"
    folder.mkdir(parents=True, exist_ok=True)
    trainings.mkdir(parents=True, exist_ok=True)
    jobs = plan_trainings(exp, trainings.resolve(), threads, device)
    try:
        train_all(exp, jobs, click.echo, address, use_ray or address is not None)
    except TrainingFailed as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_INCOMPLETE
    suite = measuring_suite(exp, jobs, folder.resolve())
    click.echo(f"measuring suite: {suite}")
    if train_only:
        return EXIT_OK
    run_dir = Path(out) if out else Path("reports") / "experiments" / exp.name
    unfinished = (run_dir / rs.PARTIAL_FILE).is_file() and not (run_dir / rs.RESULTS_FILE).is_file()
    opts = RunOptions(  # like the trainings, an unfinished measuring run continues where it stopped
        suite=str(suite), out=str(run_dir), quick=quick, threads=threads,
        resume=resume or (unfinished and not overwrite), overwrite=overwrite, progress=sys.stderr.isatty(),
    )  # fmt: skip
    outcome = run_suite(opts, echo=click.echo)
    return outcome.exit_code

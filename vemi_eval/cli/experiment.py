"""`vemi-eval experiment run FILE` and `vemi-eval experiment list`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, SuiteError
from .options import EXIT_CODES_HELP, check_at_least
from .training_common import check_device

if TYPE_CHECKING:
    from ..experiments.train import Training

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent.parent / "suites" / "experiments"


@click.group("experiment")
def experiment_command() -> None:
    """Paired training experiments of the training-side enhancements (suites/experiments/*.toml)."""


@experiment_command.command("list")
def list_cmd() -> int:
    """The experiment files: enhancement, trainer, arms, steps x seeds."""
    from ..experiments.spec import read_experiment

    for path in sorted(EXPERIMENTS_DIR.glob("*.toml")):
        e = read_experiment(path)
        arms = ", ".join(f"{a.name}[{'+'.join(a.options) or '-'}]" for a in e.arms)
        click.echo(
            f"{e.name:24s} {e.enhancement:5s} {e.trainer:6s} {e.steps} steps x seeds {list(e.seeds)}: {arms}"
        )
    return EXIT_OK


def check_trainer_arguments(jobs: list[Training]) -> None:
    """Each training's arguments through its trainer's own parser (`vemi-eval train codec|lm`, a sibling
    of this command), before the first training starts: a bad ``train_args`` is one line (exit 2)
    now, not a failed training after others have run."""
    train = click.get_current_context().find_root().command.commands["train"]  # type: ignore[attr-defined]
    for job in jobs:
        at = job.argv.index("train") + 1
        try:
            train.commands[job.argv[at]].make_context(f"train {job.argv[at]}", list(job.argv[at + 1 :]))
        except click.ClickException as exc:
            raise SuiteError(
                f"arm {job.arm.name!r}: `vemi-eval train {job.argv[at]}` refuses its arguments: "
                f"{exc.format_message()}"
            ) from None


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
    from .. import rundir
    from ..experiments.spec import read_experiment
    from ..experiments.suite import measuring_suite
    from ..experiments.train import TrainingFailed, plan_trainings, train_all
    from ..recorded_run import run_suite
    from ..runner import RUN_FILES, RunOptions

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    check_at_least(1, threads=threads)
    check_device(device)
    if use_ray or address is not None:
        from ..sweep.cluster import import_ray

        import_ray("`vemi-eval experiment run --ray`")
    path = Path(file)
    if not path.is_file() and (EXPERIMENTS_DIR / f"{file}.toml").is_file():
        path = EXPERIMENTS_DIR / f"{file}.toml"
    exp = read_experiment(path)
    folder = Path("runs") / "experiments" / exp.name  # the generated measuring suite
    trainings = Path(checkpoints) if checkpoints else Path("runs") / "experiments" / "trainings"
    rundir.check_writable(folder)
    rundir.check_writable(trainings)
    jobs = plan_trainings(exp, trainings.resolve(), threads, device)
    check_trainer_arguments(jobs)
    # everything that could refuse the measuring run is checked before hours of training
    run_dir = Path(out) if out else Path("reports") / "experiments" / exp.name
    unfinished = (run_dir / rs.PARTIAL_FILE).is_file() and not (run_dir / rs.RESULTS_FILE).is_file()
    if not train_only:
        rundir.refuse_other_kind(run_dir, (rundir.SWEEP_FILE,), "sweep")
        if not (resume or unfinished):
            rundir.refuse_to_destroy(run_dir, RUN_FILES, overwrite)
        rundir.check_writable(run_dir)
    try:
        train_all(exp, jobs, click.echo, address, use_ray or address is not None)
    except TrainingFailed as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_INCOMPLETE
    except KeyboardInterrupt:
        click.echo("interrupted: each training saved its state; the same command resumes", err=True)
        return EXIT_INTERRUPTED
    suite = measuring_suite(exp, jobs, folder.resolve())
    click.echo(f"measuring suite: {suite}")
    if train_only:
        return EXIT_OK
    opts = RunOptions(  # like the trainings, an unfinished measuring run continues where it stopped
        suite=str(suite), out=str(run_dir), quick=quick, threads=threads,
        resume=resume or (unfinished and not overwrite), overwrite=overwrite, progress=True,
    )  # fmt: skip
    outcome = run_suite(opts, echo=click.echo)
    from ..run_summary import summary_lines

    click.echo("\n".join(summary_lines(outcome.results, outcome.out_dir, outcome.report)))
    return outcome.exit_code

"""Command-line options that `vemi-eval run` and `vemi-eval sweep` share, and the checks of how they
combine: written once, so that the two commands cannot drift apart; the exit codes every command's help
ends with."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import EXIT_CODES

F = TypeVar("F", bound=Callable[..., object])

EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES.items())


def _apply(fn: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):  # the first listed is the first in --help
        fn = option(fn)
    return fn


def model_options(where: str = "") -> Callable[[F], F]:
    """--preset, --config, --checkpoint, --codec-checkpoint. ``where``: what the paths must be true of
    (a sweep's runs read them on every node)."""
    note = f"; {where}" if where else ""

    def decorate(fn: F) -> F:
        return _apply(
            fn,
            [
                click.option(
                    "--preset", help="Model preset: tiny (default), moshi-7b, moshi-2b (LM + its codec)."
                ),
                click.option(
                    "--config", type=click.Path(dir_okay=False), help="LM config JSON (Moshi format)."
                ),
                click.option(
                    "--checkpoint", type=click.Path(dir_okay=False), help=f"LM weights (safetensors{note})."
                ),
                click.option(
                    "--codec-checkpoint",
                    type=click.Path(dir_okay=False),
                    help=f"Codec weights (safetensors{note}).",
                ),
            ],
        )

    return decorate


@dataclasses.dataclass(frozen=True)
class OutputSettings:
    """Where a run or sweep writes and what it keeps: the fields RunOptions and SweepOptions share."""

    out: str | None
    resume: bool
    overwrite: bool
    report: bool
    history: bool
    history_path: Path | None

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def output_options(what: str, default_out: str) -> Callable[[F], F]:
    """--out, --resume, --overwrite, --no-report, --no-history, --history of a ``what`` ("run", "sweep"),
    checked together and handed to the command as one ``output: OutputSettings``."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def collect(
            *args: Any,
            out: str | None,
            resume: bool,
            overwrite: bool,
            no_report: bool,
            no_history: bool,
            history_path: str | None,
            **kwargs: Any,
        ) -> Any:
            check_output_options(what, out, resume, overwrite)
            output = OutputSettings(
                out,
                resume,
                overwrite,
                not no_report,
                not no_history,
                Path(history_path) if history_path else None,
            )
            return fn(*args, output=output, **kwargs)

        return _apply(
            collect,  # type: ignore[arg-type]
            [
                click.option(
                    "--out",
                    type=click.Path(file_okay=False),
                    help=f"{what.capitalize()} directory (default {default_out}).",
                ),
                click.option(
                    "--resume", is_flag=True, help=f"Continue the {what} in --out, skipping what is finished."
                ),
                click.option(
                    "--overwrite",
                    is_flag=True,
                    help=f"Replace an earlier {what} in --out (without it, one is never touched).",
                ),
                click.option("--no-report", is_flag=True, help="Do not build report.html."),
                click.option("--no-history", is_flag=True, help="Do not append to the SQLite history."),
                click.option(
                    "--history",
                    "history_path",
                    type=click.Path(dir_okay=False),
                    help="History database (default $VEMI_HISTORY or ~/.cache/vemi-eval/history.sqlite).",
                ),
            ],
        )

    return decorate


def check_output_options(what: str, out: str | None, resume: bool, overwrite: bool) -> None:
    """--resume continues the directory that --out names, and cannot also replace it."""
    if resume and not out:
        raise click.UsageError(f"--resume needs --out (the {what} directory to continue)")
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")


def check_at_least(low: float, **values: float | None) -> None:
    """Each option given (keyword: its name, _ for -) is ``low`` or more; a value below is usage (exit 2)."""
    for name, value in values.items():
        if value is not None and value < low:
            raise click.BadParameter(f"must be >= {low}", param_hint="--" + name.replace("_", "-"))

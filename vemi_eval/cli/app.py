"""The `vemi-eval` group, its commands (one module each in this package, as asv's ``commands/``), and
``main``: the one place where an error becomes an exit code (README.md lists them). A user error is one
line on stderr and exit 2, a storage failure exit 5, Ctrl-C exit 130; anything else is a bug and keeps its
traceback. Heavy imports (torch, the model, the report) happen inside the commands."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STORAGE,
    StorageError,
    one_line,
    user_error_types,
)
from .experiment import experiment_command
from .gate import gate_cmd
from .history import history_command
from .list import list_cmd
from .matrix import matrix_cmd
from .model import model_group
from .options import EXIT_CODES_HELP
from .report import report_cmd
from .run import run_cmd
from .show import show_cmd
from .sweep import sweep_command
from .train_codec import train_codec_cmd
from .train_lm import train_lm_cmd


def package_version() -> str:
    """The installed package's version (pyproject.toml), or the source tree's when run uninstalled."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vemi-eval")
    except PackageNotFoundError:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    package_version(), "--version", "-V", prog_name="vemi-eval", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Benchmark and evaluate full-duplex speech-to-speech models (Moshi family): latency, throughput,
    memory, fidelity, WER, codec quality, speaker consistency and noise robustness, for any combination
    of the enhancement flags."""


@cli.group("train")
def train_group() -> None:
    """Train the small models the tiny preset needs."""


train_group.add_command(train_codec_cmd)
train_group.add_command(train_lm_cmd)
for command in (list_cmd, run_cmd, show_cmd, report_cmd, matrix_cmd, gate_cmd, model_group):
    cli.add_command(command)
cli.add_command(sweep_command, "sweep")
cli.add_command(experiment_command, "experiment")
cli.add_command(history_command, "history")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit 2, never a traceback."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None, prog_name="vemi-eval", standalone_mode=False
        )
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except user_error_types() as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except StorageError as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(EXIT_STORAGE)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)

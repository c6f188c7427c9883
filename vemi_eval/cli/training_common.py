"""What `vemi-eval train codec` and `train lm` share on the command line: their numbers and device
checked before any work, one training per output, and Ctrl-C / SIGTERM that save the state and print
the command that resumes (exit 130)."""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_INTERRUPTED, OptionsError, one_line

SEED_MAX = 2**63 - 1  # numpy's and torch's seeds
OVERWRITE_HELP = (
    "Replace finished weights at --out and their sidecar (without it they are never touched; a file "
    "another program wrote is never replaced)."
)


def check_range(
    name: str,
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
) -> None:
    """``--name`` is finite and within [low, high] ((low, high] with ``open_low``); None: not given."""
    if value is None:
        return
    hint = "--" + name.replace("_", "-")
    if not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}", param_hint=hint)
    if low is not None and (value <= low if open_low else value < low):
        raise click.BadParameter(f"must be {'>' if open_low else '>='} {low:g}", param_hint=hint)
    if high is not None and value > high:
        raise click.BadParameter(f"must be <= {high:g}", param_hint=hint)


def check_seed(seed: int) -> None:
    check_range("seed", seed, 0, SEED_MAX)


def check_device(device: str) -> None:
    """cpu, cuda or cuda:N, and CUDA there when asked: OptionsError (exit 2) before any work."""
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise OptionsError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise OptionsError(f"--device {device}: CUDA is not available on this machine")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise OptionsError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")


def resume_command(ctx: click.Context, drop: tuple[str, ...] = ("fresh",)) -> str:
    """The command line that continues this training: every option given a value other than its default
    (``drop``: those a resume must not repeat, --fresh above all)."""
    args = ctx.command_path.split()
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in drop or param.name not in ctx.params:
            continue
        value, flag = ctx.params[param.name], param.opts[0]
        if param.is_flag:
            if value and not param.default:
                args.append(flag)
        elif param.multiple:
            for v in value or ():
                args += [flag, str(v)]
        elif value is not None and value != param.default:
            args += [flag, str(value)]
    return shlex.join(args)


@contextmanager
def training_session(outputs: Any) -> Iterator[Any]:
    """The lock on the outputs (training/outputs.py) and the signals' stop request, for one training."""
    from ..training.interrupt import stop_on_signal
    from ..training.outputs import one_writer

    with one_writer(outputs), stop_on_signal() as stop:
        yield stop


def run_training(ctx: click.Context, outputs: Any, train: Callable[[Any], Any]) -> Any:
    """``train(stop)`` inside a training session; a signal's stop becomes the resume line and exit 130."""
    from ..training.interrupt import TrainingInterrupted

    try:
        with training_session(outputs) as stop:
            return train(stop)
    except TrainingInterrupted as exc:
        click.echo(f"{exc}; continue with `{resume_command(ctx)}`", err=True)
        ctx.exit(EXIT_INTERRUPTED)


def check_sidecar_readable(sidecar: Path, what: str) -> None:
    """A weights file's sidecar, when there is one, is a JSON object (one line naming it otherwise)."""
    if not sidecar.is_file():
        return
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OptionsError(f"{what}: cannot read its sidecar {sidecar}: {one_line(exc)}") from None
    if not isinstance(info, dict):
        raise OptionsError(f"{what}: its sidecar {sidecar} is not a JSON object")

"""Where a trainer writes, checked before any work: the weights (``--out``), their JSON sidecar (``--out``
with ``.json`` as its suffix) and the resumable state; and one training at a time per output.

A trainer never writes over a file it did not write (a run's results.json, another trainer's weights),
never replaces finished weights unless told ``--overwrite`` (the rule `run` follows for a finished run),
and refuses a second process that would write the same files (the two would race on them).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionsError
from ..storage import check_writable, refuse_run_data_name


@dataclass(frozen=True)
class TrainingOutputs:
    """The files one training writes."""

    weights: Path
    sidecar: Path
    state: Path


def sidecar_of(weights: Path) -> Path:
    return weights.with_suffix(".json")


def check_training_outputs(
    out: str | os.PathLike, state: str | os.PathLike, produced_by: str, overwrite: bool
) -> TrainingOutputs:
    """OptionsError (one line, exit 2) for an ``--out`` or state path a training must not write; creates
    the output folder and probes that it can be written."""
    weights, st = Path(out), Path(state)
    sidecar = sidecar_of(weights)
    if weights.suffix != ".safetensors":
        raise OptionsError(
            f"--out {weights}: the weights are a .safetensors file (their sidecar: the same name, .json)"
        )
    if st.suffix != ".safetensors" or st in (weights, sidecar):
        raise OptionsError(f"--state {st}: the state is a .safetensors file of its own, beside the weights")
    refuse_run_data_name(sidecar, "--out's sidecar")
    for path in (weights, sidecar, st):
        if path.is_dir():
            raise OptionsError(f"{path} is a directory; a trainer writes a file there")
    _check_sidecar(weights, sidecar, produced_by, overwrite)
    _check_state(st)
    for folder in {weights.parent, st.parent}:
        check_writable(folder)  # a parent that is a file, or read-only: one line now, not after training
    return TrainingOutputs(weights, sidecar, st)


def _check_sidecar(weights: Path, sidecar: Path, produced_by: str, overwrite: bool) -> None:
    if sidecar.exists():
        try:
            info = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            info = None
        if not isinstance(info, dict) or info.get("produced_by") != produced_by:
            raise OptionsError(
                f"--out {weights}: {sidecar} is not a sidecar this trainer wrote (kept): choose another --out"
            )
        # the codec trainer writes a sidecar on every checkpoint ("final": false); the LM's only at the end
        if info.get("final", True) is True and weights.exists() and not overwrite:
            raise OptionsError(
                f"--out {weights} holds finished weights ({sidecar}): --overwrite replaces them, or choose "
                "another --out"
            )
    elif weights.exists() and not overwrite:
        raise OptionsError(
            f"--out {weights} exists without a sidecar of this trainer: --overwrite replaces it, or choose "
            "another --out"
        )


def _check_state(state: Path) -> None:
    """A readable safetensors file at the state path must be a training state (--fresh writes over it
    unread: someone's weights there would be lost). A torn one is left to the resume, whose message
    names --fresh."""
    if not state.exists():
        return
    from safetensors import safe_open

    try:
        with safe_open(str(state), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # safetensors raises its own error types for a torn file
        return
    if "state" not in meta and not state.with_suffix("").with_suffix(".state.json").is_file():
        raise OptionsError(
            f"{state} is not a training state (a corrupt or foreign file); it is kept: move it away or "
            "pass another --state"
        )


@contextmanager
def one_writer(outputs: TrainingOutputs) -> Iterator[None]:
    """Hold an exclusive lock on each output for the whole training; a second training of the same
    files is refused (exit 2) instead of racing on them."""
    with ExitStack() as stack:
        for path in sorted({outputs.weights, outputs.state}):
            stack.enter_context(_locked(path.with_name(path.name + ".lock"), path))
        yield


@contextmanager
def _locked(lock: Path, what: Path) -> Iterator[None]:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OptionsError(
                f"another training (pid {holder}) is writing {what}: wait for it, or choose another --out"
            ) from None
        # the holder before us may have removed the file between our open and our lock: lock the new one
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)

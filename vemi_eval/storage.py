"""Writing files so that a crash leaves the old content or the new, never half of either."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OptionsError, StorageError

RESULTS_FILE = "results.json"
PARTIAL_FILE = "results.partial.jsonl"
SAMPLES_FILE = "samples.csv"
# what a run measured: no command's output file may take one of these names (a report or a trainer's
# sidecar written over results.json destroys the run)
RUN_DATA_FILES = (RESULTS_FILE, PARTIAL_FILE, SAMPLES_FILE)


def cache_home() -> Path:
    """Where the harness keeps what it builds once (corpora, token grids, random weights):
    ``$VEMI_CACHE``, default ``~/.cache/vemi-eval``."""
    return Path(os.environ.get("VEMI_CACHE") or Path.home() / ".cache" / "vemi-eval")


@functools.cache
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, computed once per (path, size, mtime)."""
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime)


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write a whole file through a temporary sibling, fsync it, then rename it over ``path``."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two writers never share a temporary
    try:
        with tmp.open("wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no stray temporary beside the old file
        raise
    return path


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync it. A torn last line (a kill or a full disk mid-write) is first cut
    off, so the new line never fuses with a fragment and both get lost together."""
    path = Path(path)
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.seek(0)
                body = f.read()
                f.truncate(body.rfind(b"\n") + 1)
    with path.open("a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def writes(what: str, keep: str = "") -> Iterator[None]:
    """A failed write inside the block (a full disk) becomes a StorageError (exit 5) naming ``what`` and
    what is kept."""
    try:
        yield
    except OSError as exc:
        raise StorageError(
            f"cannot write {what}: {exc.strerror or exc}" + (f"; {keep}" if keep else "")
        ) from None


def refuse_run_data_name(path: str | os.PathLike, what: str) -> None:
    """An output file named like a run's measurements is refused (exit 2), whether or not one is there."""
    if Path(path).name in RUN_DATA_FILES:
        raise OptionsError(
            f"{what} {path}: {Path(path).name} is the name of a run's measurements; choose another file name"
        )


def check_writable(where: Path) -> None:
    """Create ``where`` and write a probe file into it, so that an output that cannot be written is a
    one-line error before any work (exit 2), not a traceback after it."""
    probe = where / ".vemi-write-probe"
    blocking = next((p for p in (where, *where.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OptionsError(f"cannot write to {where}: {blocking} is a file, not a directory")
    try:
        where.mkdir(parents=True, exist_ok=True)
        write_atomic(probe, b"\0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise OptionsError(f"cannot write to {where}: {exc.strerror or exc}") from None

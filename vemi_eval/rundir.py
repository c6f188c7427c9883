"""What `run` and `sweep` share about a directory of results: the names of its files, the partial file
(one line per finished measurement), the fingerprint that --resume checks, what a fresh start clears,
where output goes by default, and the exit code a set of statuses gives.

results.partial.jsonl gets one line per finished (kind, variant) the moment it finishes, so a killed run
loses nothing and ``--resume`` skips what is there.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, OptionsError, StorageError
from .records import MetricRecord
from .storage import (  # noqa: F401  (re-exported: the run's data-file names live with the files)
    PARTIAL_FILE,
    RESULTS_FILE,
    RUN_DATA_FILES,
    SAMPLES_FILE,
    append_line,
    check_writable,
    refuse_run_data_name,
    write_atomic,
)

LOG_FILE = "run.log"
REPORT_FILE = "report.html"

SWEEP_FILE = "sweep.json"  # a sweep directory's summary (vemi_eval/sweep/summary.py)

# status of a run (results.json "status"); a sweep adds its own for runs that did not finish
VALID, INVALID, INCOMPLETE = "VALID", "INVALID", "INCOMPLETE"
FINISHED = (VALID, INVALID)  # results.json is final: --resume keeps it


def canonical(x: Any) -> str:
    return json.dumps(x, sort_keys=True, default=str)


def fingerprint_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The keys of ``new`` whose value differs in ``old`` (a missing key differs)."""
    return [k for k, v in new.items() if canonical(old.get(k)) != canonical(v)]


def check_same_run(where: Path, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """--resume continues only the run that made ``where``: OptionsError (exit 2) naming what changed."""
    diff = fingerprint_diff(old, new)
    if diff:
        raise OptionsError(f"--resume: the run in {where} was made with a different {', '.join(diff)}")


def refuse_to_destroy(where: Path, names: Iterable[str], overwrite: bool) -> None:
    """A directory that holds an earlier run is kept unless --overwrite says otherwise (exit 2)."""
    found = [n for n in names if (where / n).exists()]
    if found and not overwrite:
        raise OptionsError(
            f"{where} holds an earlier run ({', '.join(found)}): --resume continues it, --overwrite "
            "replaces it, or choose another --out"
        )


def check_output_file(path: str | os.PathLike, what: str, create_folder: bool = False) -> Path:
    """An output file (a report, a gate's JUnit XML) that can be written and destroys no run: one line
    (exit 2) before any work for a directory, a missing (unless ``create_folder``) or read-only folder,
    or a run's results name."""
    p = Path(path)
    refuse_run_data_name(p, what)
    if p.is_dir():
        raise OptionsError(f"cannot write {what} {p}: it is a directory")
    if create_folder:
        check_writable(p.parent)
    if not p.parent.is_dir():
        raise OptionsError(f"cannot write {what} {p}: directory {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise OptionsError(f"cannot write {what} {p}: permission denied")
    return p


def refuse_other_kind(where: Path, names: Iterable[str], kind: str) -> None:
    """A run never goes into a sweep's directory, nor a sweep into a run's: their files would mix and a
    report would be written over the other's (exit 2, whatever --overwrite says)."""
    found = [n for n in names if (where / n).exists()]
    if found:
        raise OptionsError(f"--out {where} holds a {kind} ({', '.join(found)}); choose another --out")


def clear(where: Path, names: Iterable[str]) -> None:
    """Remove an earlier run's files so that a new run in the same directory starts afresh."""
    for name in names:
        (where / name).unlink(missing_ok=True)


def default_out(name: str) -> Path:
    """runs/NAME-TIME, the name cut to letters, digits, '.', '_' and '-' and to 80 characters (a file
    name has a length limit; a suite's name has none)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:80] or "suite"
    return Path("runs") / f"{safe}-{datetime.now():%Y%m%d-%H%M%S}"


def exit_code(statuses: Iterable[str], interrupted: bool = False) -> int:
    """130 when interrupted; else 4 if any run did not finish (INCOMPLETE, FAILED...), 3 if one is
    INVALID, 0 when every one is VALID."""
    found = set(statuses)
    if interrupted:
        return EXIT_INTERRUPTED
    if found - set(FINISHED):
        return EXIT_INCOMPLETE
    if INVALID in found:
        return EXIT_INVALID
    return EXIT_OK


# --- the partial file -----------------------------------------------------------------------------
def append_partial(out_dir: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: a kill right after loses nothing that was reported done."""
    append_line(out_dir / PARTIAL_FILE, json.dumps(entry, default=json_default))


def append_entry(out: Path, entry: dict[str, Any]) -> None:
    """One line of the partial file; a failed write (a full disk) ends the run with exit 5, keeping every
    line written before it."""
    try:
        append_partial(out, entry)
    except OSError as exc:
        raise StorageError(
            f"cannot write {out / PARTIAL_FILE}: {exc.strerror or exc}; the measurements finished before "
            "are kept there: free space, then run again with --resume"
        ) from None


def result_entry(
    kind: str, variant: str, records: list[MetricRecord], samples: list, replicate: int = 0
) -> dict[str, Any]:
    """The partial-file line of one finished (kind, variant, replicate)."""
    return {
        "type": "result",
        "kind": kind,
        "variant": variant,
        "replicate": replicate,
        "records": [r.to_dict() for r in records],
        "samples": samples,
    }


def entry_key(e: dict[str, Any]) -> tuple[str, str, int]:
    """(kind, variant, replicate) of a partial entry (entries written before replicates: replicate 0)."""
    return (e["kind"], e["variant"], int(e.get("replicate") or 0))


def read_partial(out_dir: Path) -> list[dict[str, Any]]:
    """Entries of the partial file; a torn last line (killed while writing) is ignored."""
    path = out_dir / PARTIAL_FILE
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def json_default(o: Any) -> Any:
    """What json.dumps writes for numpy values, paths, sets and tuples (and str() of anything else)."""
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)

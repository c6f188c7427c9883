"""Reading one run's results back: results.json (schema-versioned, checked field by field) and where it is.

The runner writes the files of a run directory (vemi_eval/run_results.py, vemi_eval/rundir.py); this
module is what the commands above the runner (report, gate, history, sweep) read them with. It
re-exports the files' names, the partial file's reader and writer and the schema: a reader imports one
module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ResultsError
from .records import upgrade_metric
from .run_results import SCHEMA, SCHEMA_VERSION  # noqa: F401  (re-exported: the schema written)
from .rundir import (  # noqa: F401  (re-exported: the run directory's file names and its partial file)
    LOG_FILE,
    PARTIAL_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    RUN_DATA_FILES,
    SAMPLES_FILE,
    append_partial,
    read_partial,
    refuse_run_data_name,
)

READABLE_VERSIONS = (1, 2)  # schema 1 is upgraded on reading (those facts lived in the record's extra)


def results_path(run_dir_or_file: str | os.PathLike) -> Path:
    p = Path(run_dir_or_file)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        raise ResultsError(f"no results at {run_dir_or_file} (expected a run directory or a results.json)")
    return p


def read_results(run_dir_or_file: str | os.PathLike) -> dict[str, Any]:
    """Load and check a results.json (a run directory or the file itself); ResultsError if unusable."""
    p = results_path(run_dir_or_file)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"cannot read {p}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ResultsError(f"{p} is not a vemi-eval results file (schema {SCHEMA!r} expected)")
    if doc.get("schema_version") not in READABLE_VERSIONS:
        got = doc.get("schema_version")
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise ResultsError(f"{p}: schema_version {got!r}, this harness reads {readable}")
    if not isinstance(doc.get("metrics"), list):
        raise ResultsError(f"{p}: no 'metrics' list")
    if not all(isinstance(m, dict) for m in doc["metrics"]):
        raise ResultsError(f"{p}: 'metrics' holds something else than records")
    check_structure(doc, p)
    doc["metrics"] = [upgrade_metric(m) for m in doc["metrics"]]
    doc["_path"] = str(p)
    return doc


_TOP_TYPES: dict[str, type | tuple[type, ...]] = {
    "suite": dict, "variants": list, "model": dict, "status": str, "invalid_reasons": list,
    "errors": list, "missing": list, "environment": dict,
}  # fmt: skip
_NUMBERS = ("value", "ci_low", "ci_high", "ratio_to_baseline", "ratio_ci_low", "ratio_ci_high")


def check_structure(doc: dict[str, Any], p: Path) -> None:
    """The fields report, matrix and gate read, of the types they read them as: ResultsError naming the
    file and the field, not a crash deep in a command."""
    for key, want in _TOP_TYPES.items():
        if key in doc and doc[key] is not None and not isinstance(doc[key], want):
            raise ResultsError(f"{p}: {key!r} is a {type(doc[key]).__name__}; expected {_name(want)}")
    if not all(isinstance(v, dict) for v in doc.get("variants") or []):
        raise ResultsError(f"{p}: 'variants' holds something else than objects")
    for i, m in enumerate(doc["metrics"]):
        where = f"{p}: metrics[{i}]"
        for key in ("variant", "metric", "status"):
            if not isinstance(m.get(key), str):
                raise ResultsError(f"{where}.{key} is {m.get(key)!r}; expected a string")
        for key in _NUMBERS:
            v = m.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ResultsError(f"{where}.{key} is {v!r}; expected a number or null")
        if not isinstance(m.get("condition") or {}, dict):
            raise ResultsError(f"{where}.condition is {m.get('condition')!r}; expected an object")
        samples = m.get("samples")
        if samples is not None and not (
            isinstance(samples, list) and all(isinstance(x, (int, float)) for x in samples)
        ):
            raise ResultsError(f"{where}.samples is not a list of numbers")


def _name(t: type | tuple[type, ...]) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(t, str(t))  # type: ignore[call-overload]

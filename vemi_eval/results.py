"""The results store of one run directory: results.json (schema-versioned), samples.csv, the partial file.

results.json carries everything needed to trust and redo a run (lm-evaluation-harness style): the suite's
text and hash, the model spec, variants and flags, seed, threads, git commit and dirtiness, package
versions, CPU/GPU, evaluator versions and weight hashes, data hashes, then one record per metric.

results.partial.jsonl gets one line per finished (kind, variant) the moment it finishes, so a killed run
loses nothing and ``--resume`` skips what is there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ResultsError
from .records import MetricRecord, upgrade_metric

# the names of a run's measurement files live with the files (storage.py): the trainers refuse them too
from .storage import PARTIAL_FILE, RESULTS_FILE, SAMPLES_FILE, append_line, write_atomic

SCHEMA = "vemi-eval/results"
SCHEMA_VERSION = 2  # 2: a record's kind, samples, statistic, evaluator, data, budget_ms are fields
READABLE_VERSIONS = (1, 2)  # schema 1 is upgraded on reading (those facts lived in the record's extra)
LOG_FILE = "run.log"
REPORT_FILE = "report.html"


# --- results.json --------------------------------------------------------------------------------
@dataclass
class SuiteFacts:
    """The suite a run ran: its text and hash (so it can be redone exactly)."""

    name: str
    description: str
    path: str | None
    sha256: str
    content: str

    @classmethod
    def of(cls, suite: Any) -> SuiteFacts:
        path = str(suite.path) if suite.path else None
        return cls(suite.name, suite.description, path, suite.sha256, suite.content)


@dataclass
class VariantFacts:
    """A variant as it ran: its flags and its effective model (the suite's [model] under the variant's
    own fields), one checkpoint per replicate, and what those checkpoints were trained with."""

    name: str
    flags: list[str]
    is_baseline: bool
    lm: str | None = None  # LM preset or config path
    codec: str | None = None
    lm_checkpoint: list[str | None] = field(default_factory=list)  # per replicate; None: bundled/random
    codec_checkpoint: list[str | None] = field(default_factory=list)
    dtype: str | None = None
    weights: str | None = None  # "trained" | "random"
    weights_detail: list[dict[str, str]] = field(default_factory=list)  # provenance per replicate
    trained_with: list[str] = field(default_factory=list)  # recipe options (checkpoints' sidecars)
    weights_files: list[dict[str, Any]] = field(default_factory=list)  # per replicate: path, sha256, sidecar
    replicates: int = 1
    aa: bool = False  # an A/A control (the baseline again): the noise floor, never attributed

    @classmethod
    def of(cls, decl: Any, is_baseline: bool, model: Any) -> VariantFacts:
        """From a suite's VariantDecl and its VariantModel (vemi_eval/variant_models.py)."""
        from .variant_models import weights_files_of

        reps = model.replicates
        return cls(
            name=decl.name,
            flags=list(decl.flags),
            is_baseline=is_baseline,
            lm=str(reps[0]["lm"]),
            codec=str(reps[0]["codec"]),
            lm_checkpoint=[r.get("lm_checkpoint") for r in reps],
            codec_checkpoint=[r.get("codec_checkpoint") for r in reps],
            dtype=reps[0].get("dtype"),
            weights=model.weights,
            weights_detail=[dict(r["weights"]) for r in reps],
            trained_with=list(model.trained_with),
            weights_files=[weights_files_of(r) for r in reps],
            replicates=len(reps),
            aa=decl.aa,
        )


@dataclass
class RunResults:
    """results.json of one run: how it was made, its status and why, then one record per metric."""

    suite: SuiteFacts
    model: dict[str, Any]
    variants: list[VariantFacts]
    seed: int
    quick: bool
    threads: int
    status: str  # VALID | INVALID | INCOMPLETE
    invalid_reasons: list[str]
    errors: list[dict[str, str]]  # {"kind", "variant", "error"} of each measurement that crashed
    missing: list[str]  # "kind/variant" planned but never finished
    environment: dict[str, Any]
    evaluators: dict[str, Any]
    data: dict[str, Any]
    started: str
    finished: str
    skipped_inputs: list[dict[str, str]] = field(default_factory=list)  # {kind, variant, input, reason}
    metrics: list[MetricRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "metrics":
                value = [r.to_dict() for r in value]
            elif f.name in ("suite", "variants"):
                value = asdict(value) if f.name == "suite" else [asdict(v) for v in value]
            doc[f.name] = value
        return doc


# --- the partial file -----------------------------------------------------------------------------
def append_partial(out_dir: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: a kill right after loses nothing that was reported done."""
    append_line(out_dir / PARTIAL_FILE, json.dumps(entry, default=_json_default))


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


def record_from_dict(d: dict[str, Any]) -> MetricRecord:
    return MetricRecord.from_dict(d)


def _json_default(o: Any) -> Any:
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


def write_results(out_dir: Path, doc: dict[str, Any]) -> Path:
    """Write results.json atomically (a reader never sees half a file)."""
    return write_atomic(out_dir / RESULTS_FILE, json.dumps(doc, indent=1, default=_json_default) + "\n")


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


# --- samples.csv ----------------------------------------------------------------------------------
def sample_rows(records: Iterable[MetricRecord], ctx_rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Raw rows for samples.csv: what measurements gave to ctx.add_samples, plus every record's
    ``samples`` as one row per sample (metric, sample index, value, condition keys)."""
    rows = [dict(r) for r in ctx_rows]
    for rec in records:
        samples = rec.samples
        if not isinstance(samples, list):
            continue
        for i, v in enumerate(samples):
            rows.append(
                {
                    "suite": rec.suite,
                    "variant": rec.variant,
                    "kind": rec.kind,
                    "metric": rec.metric,
                    "unit": rec.unit,
                    "sample": i,
                    "value": v,
                    **{f"cond_{k}": c for k, c in rec.condition.items()},
                }
            )
    return rows


def write_samples_csv(out_dir: Path, rows: list[dict[str, Any]]) -> Path:
    import pandas as pd

    path = out_dir / SAMPLES_FILE
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["suite", "variant", "kind", "metric", "sample", "value"])
    else:
        lead = [c for c in ("suite", "variant", "kind", "metric", "unit", "sample", "value") if c in frame]
        frame = frame[lead + [c for c in frame.columns if c not in lead]]
    return write_atomic(path, frame.to_csv(index=False))

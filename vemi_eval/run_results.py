"""results.json and samples.csv of one run, as the runner writes them when the run ends.

results.json carries everything needed to trust and redo a run (lm-evaluation-harness style): the suite's
text and hash, the model spec, variants and flags, seed, threads, git commit and dirtiness, package
versions, CPU/GPU, evaluator versions and weight hashes, data hashes, then one record per metric. Reading
and checking it back is vemi_eval/results.py, a layer above the runner.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .records import MetricRecord
from .rundir import RESULTS_FILE, SAMPLES_FILE, json_default
from .storage import write_atomic
from .suites import Suite, VariantDecl
from .variant_models import ModelSpec, VariantModel, weights_files_of

SCHEMA = "vemi-eval/results"
SCHEMA_VERSION = 2  # 2: a record's kind, samples, statistic, evaluator, data, budget_ms are fields


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
    def of(cls, suite: Suite) -> SuiteFacts:
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
    def of(cls, decl: VariantDecl, is_baseline: bool, model: VariantModel) -> VariantFacts:
        """From a suite's VariantDecl and its VariantModel (vemi_eval/variant_models.py)."""
        reps = model.replicates
        return cls(
            name=decl.name,
            flags=list(decl.flags),
            is_baseline=is_baseline,
            lm=str(reps[0].lm),
            codec=str(reps[0].codec),
            lm_checkpoint=[r.lm_checkpoint for r in reps],
            codec_checkpoint=[r.codec_checkpoint for r in reps],
            dtype=reps[0].dtype,
            weights=model.weights,
            weights_detail=[r.provenance().to_dict() for r in reps],
            trained_with=list(model.trained_with),
            weights_files=[weights_files_of(r) for r in reps],
            replicates=len(reps),
            aa=decl.aa,
        )


@dataclass
class RunResults:
    """results.json of one run: how it was made, its status and why, then one record per metric."""

    suite: SuiteFacts
    model: ModelSpec
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
            elif f.name == "model":
                value = value.to_dict()
            elif f.name in ("suite", "variants"):
                value = asdict(value) if f.name == "suite" else [asdict(v) for v in value]
            doc[f.name] = value
        return doc


def write_results(out_dir: Path, doc: dict[str, Any]) -> Path:
    """Write results.json atomically (a reader never sees half a file)."""
    return write_atomic(out_dir / RESULTS_FILE, json.dumps(doc, indent=1, default=json_default) + "\n")


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

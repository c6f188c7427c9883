"""The context a measured value holds in: device, threads, dtype, model preset, weights (trained or random,
and which bytes), and for a training-side measurement each arm's training budget.

A ratio measured on a trained tiny LM on one CPU thread and one measured on random 7B-shaped weights in
bf16 answer different questions; `vemi-eval matrix` shows one row per (claim, context) and never pools
values across contexts. Everything is read from a run's results.json; runs made before the runner kept
the training budget in ``weights_files`` have it from the sidecars committed beside them
(``RUN_DIR/trainings/<checkpoint stem>.json``), else it reads "not recorded".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .training_budget import TrainingBudget, budget_from_sidecar

SHA_SHOWN = 8  # hex digits of a weights file's sha256 in a label


@dataclass(frozen=True)
class ArmBudget:
    """The training of one arm (a variant's checkpoints, one per seed)."""

    variant: str
    budgets: tuple[TrainingBudget | None, ...]  # per replicate; None: not recorded

    @property
    def recorded(self) -> bool:
        return all(b is not None for b in self.budgets) and bool(self.budgets)

    @property
    def converged(self) -> bool | None:
        """False when any seed's loss still fell; None when that is not known for every seed."""
        known = [b.convergence for b in self.budgets if b is not None and b.convergence is not None]
        if any(not c.converged for c in known):
            return False
        return True if known and len(known) == len(self.budgets) else None

    def label(self) -> str:
        if not self.recorded:
            return f"{self.variant}: budget not recorded"
        steps = sorted({b.steps for b in self.budgets if b is not None and b.steps is not None})
        mins = [b.minutes for b in self.budgets if b is not None and b.minutes is not None]
        devices = sorted({b.device for b in self.budgets if b is not None and b.device})
        parts = [f"{'/'.join(map(str, steps)) or '?'} steps"]
        if mins:
            lo, hi = f"{min(mins):.1f}", f"{max(mins):.1f}"
            unit = "CPU-min" if devices == ["cpu"] else "device-min"
            parts.append(f"{lo} {unit}" if lo == hi else f"{lo}-{hi} {unit}")
        parts.append({True: "converged", False: "not converged", None: "convergence unknown"}[self.converged])
        return f"{self.variant}: {', '.join(parts)}"


@dataclass(frozen=True)
class MeasurementContext:
    device: str  # "cpu (AMD EPYC)", "cuda (NVIDIA H100 80GB HBM3)"
    threads: int | None
    dtype: str | None
    preset: str
    weights: str  # "trained" | "random" | "unknown"
    weights_sha256: tuple[str, ...]  # the measured variant's LM (else codec) files, one per seed
    arms: tuple[ArmBudget, ...] = ()  # training-side only: the measured arm, then the control arms

    @property
    def control_converged(self) -> bool | None:
        """Whether every control arm (trained without the recipe) converged; None: not known."""
        controls = self.arms[1:]
        if not controls:
            return None
        states = [a.converged for a in controls]
        if any(s is False for s in states):
            return False
        return True if all(s is True for s in states) else None

    @property
    def control_budget_recorded(self) -> bool:
        return bool(self.arms[1:]) and all(a.recorded for a in self.arms[1:])

    @property
    def label(self) -> str:
        parts = [self.device]
        if self.threads is not None:
            parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        if self.dtype:
            parts.append(self.dtype)
        parts.append(self.preset)
        weights = self.weights
        if self.weights_sha256:
            shas = ", ".join(s[:SHA_SHOWN] for s in self.weights_sha256)
            weights += (
                f" ({shas})"
                if len(self.weights_sha256) == 1
                else f" ({len(self.weights_sha256)} seeds: {shas})"
            )
        parts.append(weights)
        parts += [a.label() for a in self.arms]
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "threads": self.threads,
            "dtype": self.dtype,
            "preset": self.preset,
            "weights": self.weights,
            "weights_sha256": list(self.weights_sha256),
            "arms": [
                {
                    "variant": a.variant,
                    "converged": a.converged,
                    "budgets": [None if b is None else b.to_dict() for b in a.budgets],
                }
                for a in self.arms
            ],  # fmt: skip
            "label": self.label,
        }


def device_label(results: Mapping[str, Any]) -> str:
    model, env = results.get("model") or {}, results.get("environment") or {}
    device = str(model.get("device") or "cpu")
    name = env.get("gpu") if device.startswith("cuda") else env.get("cpu")
    return f"{device} ({name})" if name else device


def _preset_name(lm: Any) -> str:
    text = str(lm or "?")
    return Path(text).stem if text.endswith(".json") else text


def _part(variant: Mapping[str, Any]) -> str:
    """The part a variant's own checkpoints replace (lm, else codec): the one its context names."""
    if any(variant.get("lm_checkpoint") or []):
        return "lm"
    if any(variant.get("codec_checkpoint") or []):
        return "codec"
    return "lm"


def _sidecar_beside_run(run_dir: Path | None, checkpoint: str | None) -> dict[str, Any] | None:
    """A sidecar committed with the run (RUN_DIR/trainings/<stem>.json), None without one."""
    if run_dir is None or not checkpoint or checkpoint == "random":
        return None
    path = run_dir / "trainings" / (Path(checkpoint).stem + ".json")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _files(variant: Mapping[str, Any], part: str, run_dir: Path | None) -> list[tuple[str | None, Any]]:
    """Per replicate: (sha256, TrainingBudget | None) of the part's weights file."""
    out = []
    checkpoints = list(variant.get(f"{part}_checkpoint") or [None])
    recorded = list(variant.get("weights_files") or [])
    for r, ckpt in enumerate(checkpoints):
        files = recorded[r] if r < len(recorded) and isinstance(recorded[r], dict) else {}
        entry = files.get(part) if isinstance(files.get(part), dict) else None
        sha, budget = None, None
        if entry is not None:
            sha = entry.get("sha256")
            side = entry.get("sidecar") if isinstance(entry.get("sidecar"), dict) else {}
            if isinstance(side.get("training"), dict):
                budget = TrainingBudget.from_dict(side["training"])
        if budget is None or sha is None:
            doc = _sidecar_beside_run(run_dir, ckpt)
            if doc is not None:
                sha = sha or doc.get("weights_sha256")
                budget = budget or budget_from_sidecar(doc)
        out.append((sha, budget))
    return out


def context_of(
    results: Mapping[str, Any],
    variant: str,
    training_recipes: Iterable[str] = (),
) -> MeasurementContext:
    """The context of a variant's records in a run. ``training_recipes`` (a training-side claim's recipe
    options) adds the arms' budgets: the measured variant's, then every other trained arm of the run
    that was trained without those recipes (the control arms, whose convergence decides the power)."""
    variants = {v.get("name"): v for v in results.get("variants", [])}
    v = variants.get(variant, {})
    model = results.get("model") or {}
    path = results.get("_path")
    run_dir = (
        Path(path).parent if path and Path(path).name == "results.json" else (Path(path) if path else None)
    )
    part = _part(v)
    files = _files(v, part, run_dir)
    shas = tuple(s for s, _ in files if s)
    recipes = set(training_recipes)
    arms: tuple[ArmBudget, ...] = ()
    if recipes:
        arms = (ArmBudget(variant, tuple(b for _, b in files)),)
        for name, other in variants.items():
            if name == variant or other.get("aa") or recipes & set(other.get("trained_with") or ()):
                continue
            own = _files(other, _part(other), run_dir)
            if any(b is not None for _, b in own):
                arms += (ArmBudget(str(name), tuple(b for _, b in own)),)
    return MeasurementContext(
        device=device_label(results),
        threads=results.get("threads"),
        dtype=v.get("dtype") or model.get("dtype"),
        preset=_preset_name(v.get("lm") or model.get("lm")),
        weights=str(v.get("weights") or "unknown"),
        weights_sha256=shas,
        arms=arms,
    )

"""The model each variant runs: the suite's [model] (with the command line's overrides) under the variant's
own preset, config, checkpoints and dtype, one spec per replicate; checked before any work.

A replicate is one checkpoint of the variant's recipe (one training seed): a variant that lists N LM (or
codec) checkpoints is measured N times and its records are pooled (vemi_eval/replicates.py), so "recipe A
with 2 seeds against recipe B with 2 seeds" is one suite. What a checkpoint was trained with is read from
its JSON sidecar (``<stem>.json`` beside the ``.safetensors``, ``trained_with``): the registry attributes a
variant to a training-side enhancement by it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .storage import file_sha256
from .suites import VariantDecl


@dataclass(frozen=True)
class VariantModel:
    """A variant's effective model: one spec (the runner's model dict) per replicate."""

    replicates: tuple[dict[str, Any], ...]
    trained_with: tuple[str, ...]  # union over the checkpoints' sidecars, every replicate
    weights: str  # "trained" (LM and codec both from trained files) | "random"

    @property
    def spec(self) -> dict[str, Any]:
        """The first replicate's spec (what a single-replicate variant runs)."""
        return self.replicates[0]


def variant_models(
    variants: list[VariantDecl], base: dict[str, Any], presets: dict[str, tuple[str, str]]
) -> dict[str, VariantModel]:
    """Variant name -> its model; ConfigError / CheckpointError (one line, exit 2) for an unknown preset,
    a config or checkpoint that is missing or does not fit, or an unreadable sidecar."""
    out: dict[str, VariantModel] = {}
    for v in variants:
        specs = []
        for r in range(v.replicates):
            spec = _replicate_spec(v, r, base, presets)
            if v.own_model:
                rep = f" replicate {r + 1}" if v.replicates > 1 else ""
                check_model(spec, what=f"variant {v.name!r}{rep}")
            specs.append(spec)
        recipes: list[str] = []
        for spec in specs:
            for name in trained_with_of(spec):
                if name not in recipes:
                    recipes.append(name)
        trained = all(_trained(w) for spec in specs for w in spec["weights"].values())
        out[v.name] = VariantModel(tuple(specs), tuple(recipes), "trained" if trained else "random")
    return out


def _replicate_spec(
    v: VariantDecl, r: int, base: dict[str, Any], presets: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    from reference_model import ConfigError

    spec = {k: val for k, val in base.items() if k != "weights"}
    if v.preset is not None:  # an LM preset without a codec of its own keeps the suite's (check_model
        spec["lm"], spec["codec"] = presets.get(v.preset, (v.preset, spec["codec"]))  # refuses unknown ones)
    if v.config is not None:
        if not Path(v.config).is_file():
            raise ConfigError(f"variant {v.name!r}: config file not found: {v.config}")
        spec["lm"] = v.config
    for key in ("lm_checkpoint", "codec_checkpoint"):
        paths = getattr(v, key)
        if paths:
            spec[key] = paths[r] if len(paths) > 1 else paths[0]
    if v.dtype is not None:
        spec["dtype"] = v.dtype
    spec["weights"] = weights_provenance(spec)
    return spec


def _trained(provenance: str) -> bool:
    return not provenance.startswith("random")


def sidecar_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's JSON sidecar lives: ``<stem>.json`` beside it."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".json")


def weights_file(spec: dict[str, Any], part: str) -> Path | None:
    """The file the spec's ``part`` ("lm" or "codec") loads: its checkpoint, else the preset's bundled
    weights; None for random weights (asked for, or no file shipped for the preset)."""
    from reference_model import ConfigError, bundled_codec_weights, bundled_lm_weights

    ckpt = spec.get(f"{part}_checkpoint")
    if ckpt == "random":
        return None
    if ckpt:
        return Path(ckpt)
    bundled = {"lm": bundled_lm_weights, "codec": bundled_codec_weights}[part]
    try:
        path = bundled(spec[part]) if isinstance(spec.get(part), str) else None
    except ConfigError:  # no weights shipped for this preset: random weights
        return None
    return path if path is not None and path.is_file() else None


def read_sidecar(ckpt: Path) -> dict[str, Any] | None:
    """A checkpoint's JSON sidecar, None without one; CheckpointError (exit 2) for an unreadable one."""
    from reference_model import CheckpointError

    side = sidecar_path(ckpt)
    if not side.is_file():
        return None
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"sidecar {side} of checkpoint {ckpt} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"sidecar {side} of checkpoint {ckpt} must hold a JSON object")
    return doc


def trained_with_of(spec: dict[str, Any]) -> tuple[str, ...]:
    """The recipe options the spec's LM and codec weights were trained with (their sidecars' union); a
    checkpoint without a sidecar, random weights: none. The bundled weights' sidecars count too."""
    from .training.recipes import trained_with

    names: list[str] = []
    for part in ("lm", "codec"):
        ckpt = weights_file(spec, part)
        doc = read_sidecar(ckpt) if ckpt is not None else None
        if doc is not None:
            names += [n for n in trained_with(doc) if n not in names]
    return tuple(names)


def weights_files_of(spec: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Which bytes the spec's LM and codec ran, for results.json: path, sha256 and, from the sidecar, how
    the file was trained (steps, recipe digest, data hash, the weights it started from) and its training
    budget (minutes, device, whether its loss had stopped falling: vemi_eval/training_budget.py). A path
    alone does not say which weights ran: a bundled file is replaced by retraining, a run folder is reused."""
    from .training_budget import budget_from_sidecar

    out: dict[str, dict[str, Any] | None] = {}
    for part in ("lm", "codec"):
        ckpt = weights_file(spec, part)
        if ckpt is None or not ckpt.is_file():
            out[part] = None
            continue
        doc = read_sidecar(ckpt) or {}
        recipe = doc.get("recipe") if isinstance(doc.get("recipe"), dict) else {}
        init = recipe.get("init_from") if isinstance(recipe.get("init_from"), dict) else {}
        held = doc.get("heldout") if isinstance(doc.get("heldout"), dict) else {}
        trained = {
            "steps": doc.get("steps"),
            "recipe_digest": doc.get("recipe_digest"),
            "data_sha256": recipe.get("data_sha256"),
            "init_from_sha256": init.get("sha256"),
            "heldout_text_word_accuracy_teacher_forced": held.get("text_word_accuracy_teacher_forced"),
        }
        sidecar = {k: v for k, v in trained.items() if v is not None}
        if doc:
            sidecar["training"] = budget_from_sidecar(doc).to_dict()
        out[part] = {"path": str(ckpt), "sha256": file_sha256(ckpt), "sidecar": sidecar if doc else None}
    return out


# --- model checks and provenance (before any work) ------------------------------------------------
def check_model(m: dict[str, Any], what: str = "") -> None:
    """The LM config or preset and the codec preset exist, every checkpoint exists and fits its config
    (read from the file's header: a pickle, a wrong key, shape or dtype), all before any work: a bad one
    is a one-line error (exit 2), not a crash when the first variant is built."""
    from reference_model import CheckpointError, ConfigError, DuplexSpec, check_weights

    where = f"{what}: " if what else ""
    try:
        for key in ("lm_checkpoint", "codec_checkpoint"):
            p = m.get(key)
            if p and p != "random" and not Path(p).is_file():
                raise CheckpointError(f"checkpoint not found: {p}")
        check_weights(
            DuplexSpec(
                lm=m["lm"],
                codec=m["codec"],
                lm_checkpoint=m.get("lm_checkpoint"),
                codec_checkpoint=m.get("codec_checkpoint"),
            )
        )
    except (ConfigError, CheckpointError) as exc:
        raise type(exc)(where + str(exc)) from None


def weights_provenance(m: dict[str, Any]) -> dict[str, str]:
    """Whether the LM and the codec run weights from a file (which) or random ones: results.json and the
    report say so, since a figure of a random-weight model describes no trained model."""
    from reference_model import ConfigError, bundled_codec_weights, bundled_lm_weights

    def bundled(find: Callable[[str], Path], preset: Any) -> Path | None:
        try:
            path = find(preset) if isinstance(preset, str) else None
        except ConfigError:  # no weights are shipped for this preset
            return None
        return path if path is not None and path.is_file() else None

    out = {}
    for part, find in (("lm", bundled_lm_weights), ("codec", bundled_codec_weights)):
        ckpt, preset = m.get(f"{part}_checkpoint"), m.get(part)
        shipped = bundled(find, preset)
        if ckpt == "random":
            out[part] = "random (asked for)"
        elif ckpt:
            out[part] = f"checkpoint {ckpt}"
        elif shipped is not None:
            out[part] = f"trained, bundled {shipped.name}"
        else:
            out[part] = "random (no checkpoint given and none bundled)"
    return out

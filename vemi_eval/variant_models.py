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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import OptionsError
from .storage import file_sha256
from .suites import Suite, VariantDecl
from .training.recipes import trained_with
from .training_budget import budget_from_sidecar

# --preset NAME: the LM preset and the codec it goes with.
PRESETS = {"tiny": ("tiny", "tiny"), "moshi-7b": ("moshi-7b", "mimi"), "moshi-2b": ("moshi-2b", "mimi")}
SAMPLING_KEYS = ("temp", "temp_text", "top_k", "top_k_text")  # [model] keys passed on only when set


@dataclass(frozen=True)
class WeightsProvenance:
    """Whether the LM and the codec run weights from a file (which) or random ones, in words."""

    lm: str
    codec: str

    def to_dict(self) -> dict[str, str]:
        return {"lm": self.lm, "codec": self.codec}


@dataclass(frozen=True)
class ModelSpec:
    """The model one replicate of a variant runs: the suite's [model] under the command line's and the
    variant's overrides. results.json's "model" (and each variant's fields) is its ``to_dict``."""

    lm: str = "tiny"  # LM preset or config path
    codec: str = "tiny"
    lm_checkpoint: str | None = None  # None: the preset's bundled weights (or random); "random"
    codec_checkpoint: str | None = None
    dtype: str = "float32"  # the LM's, by torch name
    device: str = "cpu"
    temp: float | None = None  # sampling; None: the model's default
    temp_text: float | None = None
    top_k: int | None = None
    top_k_text: int | None = None
    weights: WeightsProvenance | None = None  # set once the fields are final (with_provenance)

    def with_provenance(self) -> ModelSpec:
        return replace(self, weights=weights_provenance(self))

    def provenance(self) -> WeightsProvenance:
        """The provenance found when the spec was made final (found now for a spec made without it)."""
        return self.weights if self.weights is not None else weights_provenance(self)

    def duplex_fields(self) -> dict[str, Any]:
        """The DuplexSpec keywords this spec sets (the dtype still a name; provenance is not one)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _BASE_KEYS}
        out.update({k: getattr(self, k) for k in SAMPLING_KEYS if getattr(self, k) is not None})
        return out

    def to_dict(self) -> dict[str, Any]:
        doc = self.duplex_fields()
        if self.weights is not None:
            doc["weights"] = self.weights.to_dict()
        return doc


_BASE_KEYS = ("lm", "codec", "lm_checkpoint", "codec_checkpoint", "dtype", "device")


def default_dtype(device: str) -> str:
    """The LM's dtype when neither the command line nor the suite says: bf16 on CUDA (what the released
    weights are, what flash-attn and the int4 kernel need), fp32 on CPU."""
    return "bfloat16" if device.startswith("cuda") else "float32"


def model_spec(
    suite: Suite,
    *,
    preset: str | None = None,
    config: str | None = None,
    checkpoint: str | None = None,
    codec_checkpoint: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> ModelSpec:
    """The suite's [model] table with the command line's overrides, checked before any work."""
    from reference_model import ConfigError

    m: dict[str, Any] = {"dtype": None, **suite.model}
    if preset:
        m["lm"], m["codec"] = PRESETS.get(preset, (preset, m.get("codec", "tiny")))
    if config:
        if not Path(config).is_file():
            raise ConfigError(f"config file not found: {config}")
        m["lm"] = str(Path(config).resolve())
    if checkpoint:
        m["lm_checkpoint"] = checkpoint
    if codec_checkpoint:
        m["codec_checkpoint"] = codec_checkpoint
    if device:
        m["device"] = device
    if dtype:
        m["dtype"] = dtype
    dev = str(m.get("device", "cpu"))
    if m["dtype"] is None:
        m["dtype"] = default_dtype(dev)
    for key in ("lm_checkpoint", "codec_checkpoint"):
        p = m.get(key)
        if p and p != "random" and Path(p).is_file():
            m[key] = str(Path(p).resolve())
    if not (dev == "cpu" or dev == "cuda" or dev.startswith("cuda:")):
        raise OptionsError(f"unknown device {dev!r} (cpu, cuda or cuda:N)")
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise OptionsError(f"device {dev!r} asked but CUDA is not available on this machine")
    spec = ModelSpec(**m).with_provenance()
    check_model(spec)
    return spec


@dataclass(frozen=True)
class VariantModel:
    """A variant's effective model: one spec per replicate."""

    replicates: tuple[ModelSpec, ...]
    trained_with: tuple[str, ...]  # union over the checkpoints' sidecars, every replicate
    weights: str  # "trained" (LM and codec both from trained files) | "random"

    @property
    def spec(self) -> ModelSpec:
        """The first replicate's spec (what a single-replicate variant runs)."""
        return self.replicates[0]


def variant_models(variants: list[VariantDecl], base: ModelSpec) -> dict[str, VariantModel]:
    """Variant name -> its model; ConfigError / CheckpointError (one line, exit 2) for an unknown preset,
    a config or checkpoint that is missing or does not fit, or an unreadable sidecar."""
    out: dict[str, VariantModel] = {}
    for v in variants:
        specs = []
        for r in range(v.replicates):
            spec = _replicate_spec(v, r, base)
            if v.own_model:
                rep = f" replicate {r + 1}" if v.replicates > 1 else ""
                check_model(spec, what=f"variant {v.name!r}{rep}")
            specs.append(spec)
        recipes: list[str] = []
        for spec in specs:
            for name in trained_with_of(spec):
                if name not in recipes:
                    recipes.append(name)
        trained = all(_trained(w) for spec in specs for w in spec.provenance().to_dict().values())
        out[v.name] = VariantModel(tuple(specs), tuple(recipes), "trained" if trained else "random")
    return out


def _replicate_spec(v: VariantDecl, r: int, base: ModelSpec) -> ModelSpec:
    from reference_model import ConfigError

    changes: dict[str, Any] = {}
    if v.preset is not None:  # an LM preset without a codec of its own keeps the suite's (check_model
        changes["lm"], changes["codec"] = PRESETS.get(v.preset, (v.preset, base.codec))  # refuses unknown)
    if v.config is not None:
        if not Path(v.config).is_file():
            raise ConfigError(f"variant {v.name!r}: config file not found: {v.config}")
        changes["lm"] = v.config
    for key in ("lm_checkpoint", "codec_checkpoint"):
        paths = getattr(v, key)
        if paths:
            changes[key] = paths[r] if len(paths) > 1 else paths[0]
    if v.dtype is not None:
        changes["dtype"] = v.dtype
    return replace(base, **changes).with_provenance()


def _trained(provenance: str) -> bool:
    return not provenance.startswith("random")


def sidecar_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's JSON sidecar lives: ``<stem>.json`` beside it."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".json")


def weights_file(spec: ModelSpec, part: str) -> Path | None:
    """The file the spec's ``part`` ("lm" or "codec") loads: its checkpoint, else the preset's bundled
    weights; None for random weights (asked for, or no file shipped for the preset)."""
    from reference_model import ConfigError, bundled_codec_weights, bundled_lm_weights

    ckpt = getattr(spec, f"{part}_checkpoint")
    if ckpt == "random":
        return None
    if ckpt:
        return Path(ckpt)
    bundled = {"lm": bundled_lm_weights, "codec": bundled_codec_weights}[part]
    try:
        path = bundled(getattr(spec, part)) if isinstance(getattr(spec, part), str) else None
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


def trained_with_of(spec: ModelSpec) -> tuple[str, ...]:
    """The recipe options the spec's LM and codec weights were trained with (their sidecars' union); a
    checkpoint without a sidecar, random weights: none. The bundled weights' sidecars count too."""
    names: list[str] = []
    for part in ("lm", "codec"):
        ckpt = weights_file(spec, part)
        doc = read_sidecar(ckpt) if ckpt is not None else None
        if doc is not None:
            names += [n for n in trained_with(doc) if n not in names]
    return tuple(names)


def weights_files_of(spec: ModelSpec) -> dict[str, dict[str, Any] | None]:
    """Which bytes the spec's LM and codec ran, for results.json: path, sha256 and, from the sidecar, how
    the file was trained (steps, recipe digest, data hash, the weights it started from) and its training
    budget (minutes, device, whether its loss had stopped falling: vemi_eval/training_budget.py). A path
    alone does not say which weights ran: a bundled file is replaced by retraining, a run folder is reused."""
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
def check_model(m: ModelSpec, what: str = "") -> None:
    """The LM config or preset and the codec preset exist, every checkpoint exists and fits its config
    (read from the file's header: a pickle, a wrong key, shape or dtype), all before any work: a bad one
    is a one-line error (exit 2), not a crash when the first variant is built."""
    from reference_model import CheckpointError, ConfigError, DuplexSpec, check_weights

    where = f"{what}: " if what else ""
    try:
        for key in ("lm_checkpoint", "codec_checkpoint"):
            p = getattr(m, key)
            if p and p != "random" and not Path(p).is_file():
                raise CheckpointError(f"checkpoint not found: {p}")
        check_weights(
            DuplexSpec(
                lm=m.lm, codec=m.codec, lm_checkpoint=m.lm_checkpoint, codec_checkpoint=m.codec_checkpoint
            )
        )
    except (ConfigError, CheckpointError) as exc:
        raise type(exc)(where + str(exc)) from None


def weights_provenance(m: ModelSpec) -> WeightsProvenance:
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
        ckpt, preset = getattr(m, f"{part}_checkpoint"), getattr(m, part)
        shipped = bundled(find, preset)
        if ckpt == "random":
            out[part] = "random (asked for)"
        elif ckpt:
            out[part] = f"checkpoint {ckpt}"
        elif shipped is not None:
            out[part] = f"trained, bundled {shipped.name}"
        else:
            out[part] = "random (no checkpoint given and none bundled)"
    return WeightsProvenance(**out)

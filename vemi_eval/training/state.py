"""What every trainer writes: the resumable state, the shipped weights and their JSON sidecar.

One mechanism for the codec and the LM trainers: a training process can be killed at any moment, so each
file is written whole through a temporary sibling and renamed (vemi_eval/storage.py); the state is one
safetensors file (model weights + optimiser moments as tensors, everything else as JSON metadata; never
pickle), so a resume reads back exactly what was saved.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from ..environment import git_state
from ..errors import DataError, one_line
from ..storage import (
    file_sha256,  # noqa: F401  (the trainers' weights digests: one cached helper)
    write_atomic,
    writes,
)

STATE_VERSION = 2
KEPT = "the training state is kept: free space, then the same command resumes and writes the outputs"


def save_training_state(
    path: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    meta: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Weights, AdamW moments and ``extra_tensors`` (e.g. the torch RNG state) as tensors; ``meta`` (step,
    elapsed time, numpy RNG, history...) and the optimiser's param groups as JSON metadata."""
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        for name, value in st.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().contiguous().clone()
    for name, value in (extra_tensors or {}).items():
        tensors[f"extra.{name}"] = value.detach().contiguous().clone()
    body = {**meta, "param_groups": osd["param_groups"], "state_version": STATE_VERSION}
    with writes(f"the training state {path}", "the state saved before is kept"):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, save(tensors, metadata={"state": json.dumps(body)}))


def load_training_state(
    path: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore ``model`` and ``opt`` in place; return the metadata and the extra tensors. ``check`` sees
    the metadata first (a state of another recipe is refused before its tensors are loaded).

    Reads the layout of before (codec trainer, state version 1: the metadata in a ``.json`` sibling and
    the moments under ``opt.``) too, so a training started by an older checkout resumes."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("state")
        tensors = load_file(str(path))
        if raw is not None:
            meta, opt_prefix = json.loads(raw), "optim."
        else:
            meta, opt_prefix = json.loads(path.with_suffix("").with_suffix(".state.json").read_text()), "opt."
            if "rng.torch" in tensors:
                tensors["extra.rng.torch"] = tensors.pop("rng.torch")
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a JSON object")
    except Exception as exc:  # safetensors raises its own types for a torn or foreign file
        raise unreadable(path, exc) from None
    if check is not None:
        check(meta)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith(opt_prefix):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        opt.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    except (RuntimeError, ValueError, KeyError) as exc:  # weights or moments of another model
        raise unreadable(path, exc) from None
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta, extra


class TrainingStateError(DataError):
    """A resume state that cannot be read back (one line naming the file and --fresh; exit 2)."""


class RecipeMismatchError(TrainingStateError):
    """A resume state written under another recipe (either trainer; one line naming --fresh; exit 2)."""


def unreadable(path: Path, exc: BaseException) -> TrainingStateError:
    return TrainingStateError(
        f"cannot resume from {path}: {one_line(exc)}; pass --fresh to start over (it replaces that file)"
    )


def write_weights(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The weights a suite loads: one safetensors file, written whole."""
    plain = {k: v.detach().contiguous().clone() for k, v in tensors.items()}  # shared tensors: copies
    with writes(f"the weights {path}", KEPT):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, save(plain, metadata=metadata))


def write_sidecar(path: Path, info: dict[str, Any]) -> None:
    """The JSON beside the weights: recipe, data hash, steps, held-out figures (see the trainers)."""
    with writes(f"the sidecar {path}", KEPT):
        write_atomic(path, json.dumps(info, indent=2, default=float) + "\n")


def git_commit() -> str:
    return git_state().get("git_commit") or "unknown"

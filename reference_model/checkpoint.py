"""Moshi-format safetensors checkpoints: strict loading onto a model built on the meta device, and saving.

Loading never allocates the weights twice (the 7B is 14 GiB in bf16): the model is built on ``meta``,
then ``load_state_dict(assign=True)`` adopts the tensors read from the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError


def read_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; raise CheckpointError (one line) if it is missing or unreadable."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        return load_file(str(p), device=str(device))
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise CheckpointError(f"cannot read checkpoint {p}: {type(exc).__name__}: {exc}") from None


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Raise CheckpointError naming the first missing, unexpected or mis-shaped key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{what} is missing key {missing[0]!r}{more}")
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(f"{what} has unexpected key {extra[0]!r}{more}")
    for k, shape in expected.items():
        if tuple(state[k].shape) != shape:
            raise CheckpointError(
                f"{what} key {k!r} has shape {list(state[k].shape)}, the config expects {list(shape)}"
            )


def load_into(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load ``path`` into ``model`` (which may live on meta) strictly; return the model on ``device``."""
    state = read_safetensors(path, device=device)
    check_state_dict(model, state, what=f"checkpoint {Path(path).name}")
    if dtype is not None:
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model


def save(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save the model's state dict as safetensors (contiguous copies; shared tensors are cloned)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)

"""Moshi-format safetensors checkpoints: strict loading onto a model built on the meta device, and saving.

Loading never allocates the weights twice (the 7B is 14 GiB in bf16): the model is built on ``meta``,
then ``load_state_dict(assign=True)`` adopts the tensors read from the file.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError

# A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON ("{...").
_HEADER_LIMIT = 100 * 2**20  # the safetensors library's own limit on the header


def read_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{key: (safetensors dtype, shape)}`` of a safetensors file, reading only its header (no tensor).

    Raise CheckpointError (one line) for a missing file or one that is not safetensors: a pickle
    (``torch.save``'s .pt/.bin) is named as such instead of the library's "header too large".
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    with p.open("rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        ok = 0 < size <= min(_HEADER_LIMIT, p.stat().st_size - 8)
        raw = f.read(size) if ok else b""
    try:
        header = json.loads(raw) if raw[:1] == b"{" else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {p} is not a safetensors file{_looks_like(head)}")
    header.pop("__metadata__", None)
    try:
        return {k: (str(v["dtype"]), tuple(int(n) for n in v["shape"])) for k, v in header.items()}
    except (TypeError, KeyError, ValueError):
        raise CheckpointError(
            f"checkpoint {p} is not a safetensors file (its header lists no tensors)"
        ) from None


def _looks_like(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip, or a bare pickle
        return " (it looks like a pickle from torch.save: convert it with safetensors.torch.save_file)"
    return ""


def read_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; raise CheckpointError (one line) if it is missing or unreadable."""
    from safetensors.torch import load_file

    p = Path(path)
    read_header(p)  # a clear message for a missing file, a pickle or a torn header
    try:
        return load_file(str(p), device=str(device))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"cannot read checkpoint {p}: {type(exc).__name__}: {exc}") from None


# safetensors dtype names of the floating types: a float parameter may be stored in any of them (the
# load casts it), but never as integers, which would only fail, or compute nonsense, at run time.
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def check_state_dict(
    model: nn.Module,
    state: dict[str, torch.Tensor] | dict[str, tuple[str, tuple[int, ...]]],
    what: str = "checkpoint",
) -> None:
    """Raise CheckpointError naming the first missing, unexpected, mis-shaped or mis-typed key.

    ``state``: tensors, or ``{key: (safetensors dtype, shape)}`` from :func:`read_header` (so a file
    can be checked against a model built on meta before any weight is read).
    """
    expected = model.state_dict()
    found = {k: _dtype_and_shape(v) for k, v in state.items()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{what} is missing key {missing[0]!r}{more}")
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(f"{what} has unexpected key {extra[0]!r}{more}")
    for k, ref in expected.items():
        dtype, shape = found[k]
        if shape != tuple(ref.shape):
            raise CheckpointError(
                f"{what} key {k!r} has shape {list(shape)}, the config expects {list(ref.shape)}"
            )
        want = _DTYPE_NAMES.get(ref.dtype, str(ref.dtype))
        ok = dtype in _FLOAT_DTYPES if ref.is_floating_point() else dtype == want
        if not ok:
            wants = "a floating type" if ref.is_floating_point() else want
            raise CheckpointError(f"{what} key {k!r} has dtype {dtype}, the model expects {wants}")


def check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError naming the first floating tensor that holds a NaN or an infinity (weights
    that would only compute NaN, found where they load rather than as a score)."""
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{what} key {k!r} holds non-finite values (NaN or inf)")


def _dtype_and_shape(v: torch.Tensor | tuple[str, tuple[int, ...]]) -> tuple[str, tuple[int, ...]]:
    if isinstance(v, torch.Tensor):
        return _DTYPE_NAMES.get(v.dtype, str(v.dtype)), tuple(v.shape)
    return v[0], tuple(v[1])


def check_checkpoint(model: nn.Module, path: str | os.PathLike, what: str = "checkpoint") -> None:
    """Check ``path`` against ``model`` (built on meta: nothing allocated) from the file's header alone."""
    check_state_dict(model, read_header(path), what=f"{what} {Path(path).name}")


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
    check_finite(state, f"checkpoint {path}")
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

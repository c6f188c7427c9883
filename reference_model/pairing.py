"""An LM reads the codes of the codec it was trained on: a pair of weights files is checked before it runs.

A trained LM's sidecar (``<weights>.json``, written by its trainer) records the codec it learned from:
``codec_sha256`` (the whole file) and ``codec_tokenizer_sha256`` (the tensors that make the codes: encoder,
its transformer, downsampling, quantizer). A codec file passes when either matches, so a codec whose
decoder alone was retrained (codes unchanged, by construction) still pairs with the LM, and any other codec
is refused with one line naming both files. An LM without a sidecar (a released Moshi checkpoint) or one
that records no codec, and random weights on either side, are not checked (``PairCheck.status`` says so).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError

# the codec modules whose weights decide the codes (the rest only decode them)
TOKENIZER_PREFIXES = ("encoder.", "encoder_transformer.", "downsample.", "quantizer.")


@dataclass(frozen=True)
class PairCheck:
    status: str  # "same codec file" | "same tokeniser" | "not checked: <why>"
    lm_checkpoint: str | None
    codec_checkpoint: str | None


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    st = os.stat(path)
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


def tokenizer_sha256(path: str | os.PathLike) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a codec file's tokeniser tensors, in name order."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        for name in sorted(k for k in f.keys() if k.startswith(TOKENIZER_PREFIXES)):
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_pair(
    lm_checkpoint: str | os.PathLike | None, codec_checkpoint: str | os.PathLike | None
) -> PairCheck:
    """Raise CheckpointError when the LM's sidecar names another codec than ``codec_checkpoint``."""
    lm = None if lm_checkpoint is None else str(lm_checkpoint)
    codec = None if codec_checkpoint is None else str(codec_checkpoint)
    if lm is None or codec is None:
        return PairCheck("not checked: random weights", lm, codec)
    sidecar = Path(lm).with_suffix(".json")
    if not sidecar.is_file():
        return PairCheck("not checked: the LM has no sidecar", lm, codec)
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read the LM's sidecar {sidecar}: {e}") from None
    want_file, want_tok = record.get("codec_sha256"), record.get("codec_tokenizer_sha256")
    if not want_file and not want_tok:
        return PairCheck("not checked: the LM's sidecar records no codec", lm, codec)
    if want_file and file_sha256(codec) == want_file:
        return PairCheck("same codec file", lm, codec)
    if want_tok and tokenizer_sha256(codec) == want_tok:
        return PairCheck("same tokeniser", lm, codec)
    raise CheckpointError(
        f"the LM {Path(lm).name} was trained on the codes of codec sha256 {str(want_file or want_tok)[:12]}, "
        f"not those of {codec}: pair it with that codec, or retrain the LM on this one"
    )

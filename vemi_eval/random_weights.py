"""Random LM weights drawn once per (config, seed, dtype, torch version) and kept as a safetensors file.

Initialising a random 7B-shaped LM (1.5B values, truncated normal) takes about 100 s of one CPU thread, and
a matrix run builds its variants dozens of times; reading the same values back from a file takes seconds.
The file holds exactly what ``build_duplex`` would draw (``torch.manual_seed(seed)``, then ``load_lm`` with
random weights, cast to the dtype), so a build from it is the same model as a fresh draw (a test checks it
tensor for tensor). What a record says of the weights comes from the variant's declared checkpoint, so a
model built from this file is still reported as random.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

# a model this small initialises in about a second: a file would save nothing
MIN_PARAMETERS = 50_000_000


def cache_dir() -> Path:
    base = Path(os.environ.get("VEMI_CACHE") or Path.home() / ".cache" / "vemi-eval")
    return base / "random-lm"


def _is_random(lm: Any, checkpoint: Any) -> bool:
    from reference_model.lm.load import BUNDLED, RANDOM

    if checkpoint is not None:
        return str(checkpoint) == RANDOM
    return not (isinstance(lm, str) and lm in BUNDLED and BUNDLED[lm].is_file())


def random_lm_file(
    lm: Any, checkpoint: Any, seed: int, dtype: torch.dtype, *, min_parameters: int = MIN_PARAMETERS
) -> Path | None:
    """The file of the random weights this LM would be built with, written on first use; None when the LM
    is not random (a checkpoint, bundled weights) or too small to be worth a file."""
    from reference_model.config import load_lm_config
    from reference_model.lm.load import load_lm
    from reference_model.lm.model import LMModel

    if not _is_random(lm, checkpoint):
        return None
    cfg = load_lm_config(lm)
    with torch.device("meta"):
        n = sum(p.numel() for p in LMModel(cfg).parameters())
    if n < min_parameters:
        return None
    what = {"config": dataclasses.asdict(cfg), "seed": int(seed), "dtype": str(dtype)}
    what["torch"] = torch.__version__  # its generator draws the values
    key = json.dumps(what, sort_keys=True, default=str)
    path = cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.safetensors"
    if path.is_file():
        return path
    from reference_model.checkpoint import save

    torch.manual_seed(seed)  # what build_duplex does before it draws the weights
    model = load_lm(cfg, "random", dtype=dtype)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save(model, tmp, metadata={"random_weights": key})
    os.replace(tmp, path)
    return path

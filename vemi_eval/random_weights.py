"""Random LM weights drawn once per (parameter shapes, seed, dtype, torch version), kept as safetensors.

Initialising a random 7B-shaped LM (1.5B values, truncated normal) takes about 100 s of one CPU thread, and
a matrix run builds its variants dozens of times; reading the same values back from a file takes seconds.
The file holds exactly what ``build_duplex`` would draw (``torch.manual_seed(seed)``, then ``load_lm`` with
random weights, cast to the dtype), so a build from it is the same model as a fresh draw (a test checks it
tensor for tensor). The draw depends only on the parameters' names and shapes in construction order, the
seed and torch's generator, which is what the file's name is a hash of. What a record says of the weights
comes from the variant's declared checkpoint, so a model built from this file is still reported random.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from reference_model import ConfigError, bundled_lm_weights, load_lm

from .storage import cache_home

# a model this small initialises in about a second: a file would save nothing
MIN_PARAMETERS = 50_000_000
RANDOM = "random"  # the checkpoint value that asks for random weights


def cache_dir() -> Path:
    return cache_home() / "random-lm"


def _is_random(lm: Any, checkpoint: Any) -> bool:
    if checkpoint is not None:
        return str(checkpoint) == RANDOM
    if not isinstance(lm, str):
        return True
    try:
        return not bundled_lm_weights(lm).is_file()
    except ConfigError:  # no weights are shipped for this preset
        return True


def random_lm_file(
    lm: Any, checkpoint: Any, seed: int, dtype: torch.dtype, *, min_parameters: int = MIN_PARAMETERS
) -> Path | None:
    """The file of the random weights this LM would be built with, written on first use; None when the LM
    is not random (a checkpoint, bundled weights) or too small to be worth a file."""
    if not _is_random(lm, checkpoint):
        return None
    shapes = [(k, list(v.shape)) for k, v in load_lm(lm, RANDOM, device="meta").state_dict().items()]
    if sum(math.prod(s) for _, s in shapes) < min_parameters:
        return None
    what = {"shapes": shapes, "seed": int(seed), "dtype": str(dtype), "torch": torch.__version__}
    key = json.dumps(what, sort_keys=True)
    path = cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.safetensors"
    if path.is_file():
        return path
    from safetensors.torch import save_file

    torch.manual_seed(seed)  # what build_duplex does before it draws the weights
    state = {
        k: v.detach().contiguous().clone() for k, v in load_lm(lm, RANDOM, dtype=dtype).state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(state, str(tmp), metadata={"random_weights": key})
    os.replace(tmp, path)
    return path

"""Build an LM from a config, with random weights (from the current torch seed) or a checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoint import load_into
from ..config import LMConfig, load_lm_config
from .model import LMModel

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# Presets that ship trained weights in reference_model/weights/ (used when no checkpoint is given).
BUNDLED = {"tiny": WEIGHTS_DIR / "tiny_lm.safetensors"}
RANDOM = "random"  # checkpoint value that asks for random weights explicitly


def resolved_checkpoint(config, checkpoint: str | os.PathLike | None) -> str | os.PathLike | None:
    """The file ``load_lm`` reads: ``checkpoint``, or the preset's bundled weights when there are some."""
    if checkpoint is None and isinstance(config, str) and config in BUNDLED and BUNDLED[config].is_file():
        return BUNDLED[config]
    return checkpoint


def load_lm(
    config: str | os.PathLike | dict | LMConfig,
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LMModel:
    """Preset name ("tiny", "moshi-7b", "moshi-2b"), Moshi-format JSON path or dict -> LMModel in eval mode.

    ``checkpoint``: a safetensors path; None loads the preset's bundled trained weights when the file
    exists (``reference_model/weights/tiny_lm.safetensors``), else random weights; "random" forces random
    weights (from the current torch seed). ``model.checkpoint`` says which: the path, or None for random.

    With a checkpoint the model is built on ``meta`` and adopts the file's tensors (no double allocation);
    a missing, extra or mis-shaped key raises CheckpointError.
    """
    cfg = load_lm_config(config)
    checkpoint = resolved_checkpoint(config, checkpoint)
    if checkpoint is None or str(checkpoint) == RANDOM:
        with torch.device(device):
            model = LMModel(cfg)
        _init_weights(model)
        model = model.to(dtype=dtype)
    else:
        with torch.device("meta"):
            model = LMModel(cfg)
        load_into(model, checkpoint, device=device, dtype=dtype)
    model.checkpoint = None if checkpoint is None or str(checkpoint) == RANDOM else str(checkpoint)
    return model.eval().requires_grad_(False)


def _init_weights(model: LMModel) -> None:
    """Truncated normal with std 1/sqrt(fan_in) for every linear and embedding, like Moshi's init of the
    layers it initialises; RMSNorm scales stay at one. Keeps random-weight activations well scaled."""
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.Linear):
                fan_in = module.in_features
            elif isinstance(module, torch.nn.Embedding):
                fan_in = module.embedding_dim
            else:
                continue
            std = fan_in**-0.5
            torch.nn.init.trunc_normal_(weight, std=std, a=-3 * std, b=3 * std)
        if model.condition_provider is not None:
            for cond in model.condition_provider.conditioners.values():
                cond.learnt_padding.normal_(0.0, 0.2)

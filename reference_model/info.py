"""Size of an LM without allocating it: parameters by component, weight bytes per dtype, KV-cache bytes.

The model is built on the ``meta`` device, so the 7B costs nothing to describe.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import torch

from .config import LMConfig, load_lm_config

DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}

# Component of each top-level module of LMModel (the keys of the state dict start with these names).
COMPONENTS = {
    "transformer": "temporal_transformer",
    "out_norm": "temporal_transformer",
    "emb": "audio_embeddings",
    "text_emb": "text_embedding",
    "text_linear": "text_head",
    "depformer": "depth_transformer",
    "depformer_in": "depth_input_projections",
    "depformer_emb": "depth_embeddings",
    "depformer_text_emb": "depth_embeddings",
    "linears": "audio_heads",
    "condition_provider": "conditioners",
}


def model_info(config: str | os.PathLike | dict | LMConfig | torch.nn.Module) -> dict[str, Any]:
    """Describe an LM config (or an already built/transformed LMModel, e.g. after ``gqa``; a path to a
    ``.safetensors`` weights file: :func:`weights_info`).

    Returns ``{"name", "parameters": {component: count}, "total_parameters", "weight_bytes": {dtype: bytes},
    "kv_cache_bytes_per_stream": {dtype: bytes}, "kv_cache": {...shape facts}}``. Weight bytes assume every
    parameter stored in that dtype (int8/int4: the weights alone, without quantization scales); KV-cache
    bytes are keys + values of the temporal transformer at full context plus the depth transformer's
    dep_q slots, for one stream.
    """
    from .lm.model import LMModel

    if isinstance(config, (str, os.PathLike)) and str(config).endswith(".safetensors"):
        return weights_info(config)
    if isinstance(config, torch.nn.Module):
        model = config
        cfg: LMConfig = model.config  # type: ignore[assignment]
        repeats = {"transformer": 1, "depformer": 1}  # every layer is there: count each
    else:
        cfg = load_lm_config(config)
        # Layers of a transformer are identical: build one of each (on meta) and count it num_layers
        # times, so a config of a million layers is described at once instead of building them all.
        with torch.device("meta"):
            model = LMModel(replace(cfg, num_layers=1, depformer_num_layers=1))
        repeats = {"transformer": cfg.num_layers, "depformer": cfg.depformer_num_layers}

    params: dict[str, int] = {}
    for name, p in model.named_parameters():
        top, *rest = name.split(".")
        # parameters of layer 0 of a one-layer stand-in stand for all the config's layers
        times = repeats.get(top, 1) if rest[:1] == ["layers"] else 1
        component = COMPONENTS.get(top, "other")
        params[component] = params.get(component, 0) + p.numel() * times
    total = sum(params.values())

    def kv_elements(transformer, capacity: int, times: int) -> int:
        return times * sum(2 * a.num_kv_heads * a.head_dim * capacity for a in transformer.attentions())

    kv_temporal = kv_elements(model.transformer, cfg.context, repeats["transformer"])
    kv_depth = kv_elements(model.depformer, cfg.dep_q, repeats["depformer"])
    attn0 = model.transformer.attentions()[0]
    return {
        "name": cfg.name,
        "parameters": params,
        "total_parameters": total,
        "weight_bytes": {d: int(total * b) for d, b in DTYPE_BYTES.items()},
        "kv_cache_bytes_per_stream": {d: int((kv_temporal + kv_depth) * b) for d, b in DTYPE_BYTES.items()},
        "kv_cache": {
            "context": cfg.context,
            "layers": len(model.transformer.layers) * repeats["transformer"],
            "num_heads": attn0.num_heads,
            "num_kv_heads": attn0.num_kv_heads,
            "head_dim": attn0.head_dim,
            "temporal_elements": kv_temporal,
            "depth_elements": kv_depth,
        },
    }


def weights_info(path: str | os.PathLike) -> dict[str, Any]:
    """What a safetensors weights file holds, from its header alone (no tensor is read): parameters by
    dtype and by component (an LM's keys are grouped as :func:`model_info` groups them)."""
    from math import prod

    from .checkpoint import read_header

    header = read_header(path)
    by_dtype: dict[str, int] = {}
    by_part: dict[str, int] = {}
    for key, (dtype, shape) in header.items():
        n = prod(shape)
        part = COMPONENTS.get(key.split(".")[0], key.split(".")[0])
        by_dtype[dtype] = by_dtype.get(dtype, 0) + n
        by_part[part] = by_part.get(part, 0) + n
    return {
        "file": str(path),
        "tensors": len(header),
        "total_parameters": sum(by_dtype.values()),
        "parameters_by_dtype": by_dtype,
        "parameters": by_part,
    }

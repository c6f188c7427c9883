"""What outside code (the harness, benchmarks) may read of the model's insides to measure it: the one
public module of such probes. Everything else the harness needs comes from the package top level (the
build function, the flag registry, the specs) and the built model's typed report
(:mod:`reference_model.report`).

Each probe is a name re-exported from where it lives, or a small reader of a built model; measurement
code names these, so that the model can reorganise its internals without the harness noticing.
"""

from __future__ import annotations

from typing import Any

import torch

from .enhancements.mod import layer_linear_flops
from .lm.kv_cache import RingKVCache, StepPositions
from .lm.transformer import KERNELS, attend, step_kernel

__all__ = [
    "KERNELS",
    "RingKVCache",
    "StepPositions",
    "attend",
    "kv_cache_bytes",
    "layer_linear_flops",
    "step_kernel",
    "temporal_attentions",
    "temporal_caches",
    "temporal_layers",
]


def temporal_layers(lm: Any) -> list[torch.nn.Module]:
    """The temporal transformer's layers, in order (a Mixture-of-Depths variant: the routed wrappers)."""
    return list(lm.transformer.layers)


def temporal_attentions(lm: Any) -> list[Any]:
    """The temporal transformer's attention modules (``num_heads``, ``head_dim``, ``backend``,
    ``make_cache``)."""
    return list(lm.transformer.attentions())


def temporal_caches(duplex: Any) -> list[RingKVCache]:
    """The live streamer's temporal KV caches (of the class the flags chose), one per layer."""
    return list(duplex.streamer.temporal_caches)


def kv_cache_bytes(duplex: Any) -> int:
    """Bytes held by every KV cache of the live streamer (temporal + depth)."""
    return int(duplex.streamer.kv_cache_bytes)

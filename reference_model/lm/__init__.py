"""Moshi's language model (temporal + depth transformers) and its streaming inference."""

from __future__ import annotations

from .kv_cache import RingKVCache, StepPositions
from .load import load_lm
from .model import LMModel
from .streamer import Streamer

__all__ = ["LMModel", "RingKVCache", "StepPositions", "Streamer", "load_lm"]

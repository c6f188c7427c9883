"""A reference full-duplex speech model, faithful to Kyutai's Moshi (Mimi codec + temporal and depth
transformers), with every enhancement of the Vemi document behind a flag.

Stable interface (see README):
    load_lm, load_codec, Streamer, CodecStreamer, build_duplex, DuplexSpec, DuplexModel,
    available_flags, parse_flags
"""

from __future__ import annotations

from .duplex import DuplexModel, DuplexSpec
from .enhancements import Flag, FlagError, FlagSpec, available_flags, parse_flags
from .errors import CheckpointError, ConfigError

__all__ = [
    "CheckpointError",
    "CodecStreamer",
    "ConfigError",
    "DuplexModel",
    "DuplexSpec",
    "Flag",
    "FlagError",
    "FlagSpec",
    "Streamer",
    "available_flags",
    "build_duplex",
    "load_codec",
    "load_lm",
    "parse_flags",
]


def __getattr__(name: str):
    # Lazy so that `import reference_model` stays cheap and the parts can be built independently.
    if name in ("load_lm", "Streamer"):
        from . import lm

        return getattr(lm, name)
    if name in ("load_codec", "CodecStreamer"):
        from . import codec

        return getattr(codec, name)
    if name == "build_duplex":
        from .build import build_duplex

        return build_duplex
    raise AttributeError(name)

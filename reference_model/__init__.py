"""A reference full-duplex speech model, faithful to Kyutai's Moshi (Mimi codec + temporal and depth
transformers), with every enhancement of the Vemi document behind a flag.

Stable interface (see README), the only names outside code imports:
    here: load_lm, load_codec, bundled_lm_weights, bundled_codec_weights, Streamer, CodecStreamer,
        build_duplex, check_weights, DuplexSpec, DuplexModel, model_info, the flag registry (available_flags,
        parse_flags, Flag, FlagSpec, FlagError) and the errors;
    reference_model.report: the typed report of a built model (``duplex.report()``);
    reference_model.probes: what a measurement may read of the model's insides.
Each enhancement is one module of ``reference_model.enhancements`` (see its docstring for the map).
"""

from __future__ import annotations

from pathlib import Path

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
    "bundled_codec_weights",
    "bundled_lm_weights",
    "check_weights",
    "load_codec",
    "load_lm",
    "model_info",
    "parse_flags",
]


def bundled_lm_weights(preset: str) -> Path:
    """The trained LM weights shipped for ``preset`` (what ``load_lm(preset)`` loads by default)."""
    from .lm.load import BUNDLED

    if preset not in BUNDLED:
        raise ConfigError(f"no bundled LM weights for preset {preset!r} (bundled: {', '.join(BUNDLED)})")
    return BUNDLED[preset]


def bundled_codec_weights(preset: str) -> Path:
    """The trained codec weights shipped for ``preset`` (what ``load_codec(preset)`` loads by default)."""
    from .codec.load import BUNDLED

    if preset not in BUNDLED:
        raise ConfigError(f"no bundled codec weights for preset {preset!r} (bundled: {', '.join(BUNDLED)})")
    return BUNDLED[preset]


def __getattr__(name: str):
    # Lazy so that `import reference_model` stays cheap and the parts can be built independently.
    if name in ("load_lm", "Streamer"):
        from . import lm

        return getattr(lm, name)
    if name in ("load_codec", "CodecStreamer"):
        from . import codec

        return getattr(codec, name)
    if name in ("build_duplex", "check_weights"):
        from . import build

        return getattr(build, name)
    if name == "model_info":
        from .info import model_info

        return model_info
    raise AttributeError(name)

"""The Mimi codec (moshi's architecture and checkpoint keys) with frame-by-frame streaming."""

from __future__ import annotations

from .config import PRESETS, CodecConfig, codec_config
from .load import load_codec
from .model import MimiCodec
from .streaming import CodecStreamer

__all__ = ["PRESETS", "CodecConfig", "CodecStreamer", "MimiCodec", "codec_config", "load_codec"]

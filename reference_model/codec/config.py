"""Codec configs in moshi's Mimi config layout (``sample_rate``, ``channels``, ``frame_rate``, ``seanet``,
``quantizer``, ``transformer``), so a released Mimi config JSON is read as is.

Presets: ``mimi`` (the released Mimi architecture, 79.3M parameters) and ``tiny`` (same structure and
frame geometry, small enough to stream a frame in a few ms on one CPU thread); ``tiny-istft`` (the tiny
codec with a causal iSTFT decoder) and ``tiny-stft`` (spectral on both sides: a causal STFT encoder
front-end too). The optional ``encoder`` / ``decoder`` sections switch SEANet's side for the spectral one.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .istft import ISTFT_DEFAULTS
from .stft_encoder import STFT_ENCODER_DEFAULTS

_MIMI_SEANET: dict[str, Any] = {
    "channels": 1,
    "dimension": 512,
    "causal": True,
    "n_filters": 64,
    "n_residual_layers": 1,
    "activation": "ELU",
    "compress": 2,
    "dilation_base": 2,
    "disable_norm_outer_blocks": 0,
    "kernel_size": 7,
    "residual_kernel_size": 3,
    "last_kernel_size": 3,
    "norm": "none",
    "pad_mode": "constant",
    "ratios": [8, 6, 5, 4],
    "true_skip": True,
}

_MIMI: dict[str, Any] = {
    "sample_rate": 24000,
    "channels": 1,
    "frame_rate": 12.5,
    "seanet": _MIMI_SEANET,
    "quantizer": {"dimension": 256, "n_q": 32, "bins": 2048, "input_dimension": 512, "output_dimension": 512},
    "transformer": {
        "d_model": 512,
        "num_heads": 8,
        "num_layers": 8,
        "causal": True,
        "layer_scale": 0.01,
        "context": 250,
        "conv_layout": True,
        "max_period": 10000,
        "gating": "none",
        "norm": "layer_norm",
        "positional_embedding": "rope",
        "dim_feedforward": 2048,
        "input_dimension": 512,
        "output_dimensions": [512],
    },
}

# Same geometry as Mimi (24 kHz, ratios [8,6,5,4] -> 25 Hz, learned stride-2 -> 12.5 Hz, split RVQ with one
# semantic codebook, 2048 bins to match the tiny LM's card); narrow SEANet and a 2-layer transformer so
# that one streaming frame costs a few ms on one thread and the codec trains on a CPU in an hour.
_TINY: dict[str, Any] = {
    "sample_rate": 24000,
    "channels": 1,
    "frame_rate": 12.5,
    "seanet": {**_MIMI_SEANET, "n_filters": 16, "dimension": 128},
    "quantizer": {"dimension": 64, "n_q": 32, "bins": 2048, "input_dimension": 128, "output_dimension": 128},
    "transformer": {
        **_MIMI["transformer"],
        "d_model": 128,
        "num_heads": 4,
        "num_layers": 2,
        "dim_feedforward": 512,
        "input_dimension": 128,
        "output_dimensions": [128],
    },
}

# The tiny codec with a causal Vocos-style iSTFT decoder (codec/istft.py) in place of the SEANet decoder:
# the encoder side (and so every code) is the tiny preset's; it adds n_fft - hop samples of decoder delay.
_TINY_ISTFT: dict[str, Any] = {**_TINY, "decoder": dict(ISTFT_DEFAULTS)}

# Spectral on both sides: a causal STFT front-end (codec/stft_encoder.py) in place of the SEANet encoder as
# well, so every learned layer runs at 100 Hz or below; new codes (an LM must be trained on them).
_TINY_STFT: dict[str, Any] = {**_TINY_ISTFT, "encoder": dict(STFT_ENCODER_DEFAULTS)}

PRESETS: dict[str, dict[str, Any]] = {
    "mimi": _MIMI,
    "tiny": _TINY,
    "tiny-istft": _TINY_ISTFT,
    "tiny-stft": _TINY_STFT,
}

_SUPPORTED = {
    ("seanet", "activation"): {"ELU"},
    ("seanet", "norm"): {"none"},
    ("seanet", "pad_mode"): {"constant", "replicate"},
    ("seanet", "causal"): {True},
    ("transformer", "norm"): {"layer_norm"},
    ("transformer", "gating"): {"none"},
    ("transformer", "positional_embedding"): {"rope"},
    ("transformer", "causal"): {True},
    ("transformer", "conv_layout"): {True},
}


@dataclass
class CodecConfig:
    """A Mimi-style codec config; ``raw`` is the moshi-layout dict it was read from."""

    sample_rate: int
    channels: int
    frame_rate: float
    seanet: dict[str, Any]
    quantizer: dict[str, Any]
    transformer: dict[str, Any]
    n_q_semantic: int = 1
    name: str = "custom"
    # None: moshi's SEANet decoder; {"kind": "istft", ...}: the causal iSTFT decoder (codec/istft.py)
    decoder: dict[str, Any] | None = None
    # None: moshi's SEANet encoder; {"kind": "stft", ...}: the causal STFT front-end (codec/stft_encoder.py)
    encoder: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def hop_length(self) -> int:
        hop = 1
        for r in self.seanet["ratios"]:
            hop *= int(r)
        return hop

    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def decoder_delay(self) -> int:
        """Samples the streaming decoder's output lags its input (0 for SEANet: n_fft - hop for iSTFT)."""
        if self.decoder is None:
            return 0
        return int(self.decoder["n_fft"]) - int(self.decoder["hop_length"])

    @property
    def frame_size(self) -> int:
        return int(self.sample_rate / self.frame_rate)

    @property
    def downsample_stride(self) -> int:
        return int(round(self.encoder_frame_rate / self.frame_rate))

    def to_dict(self) -> dict[str, Any]:
        out = {
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "frame_rate": self.frame_rate,
            "seanet": self.seanet,
            "quantizer": self.quantizer,
            "transformer": self.transformer,
        }
        if self.decoder is not None:
            out["decoder"] = self.decoder
        if self.encoder is not None:
            out["encoder"] = self.encoder
        return copy.deepcopy(out)


def _from_dict(d: dict[str, Any], name: str) -> CodecConfig:
    for key in ("sample_rate", "channels", "frame_rate", "seanet", "quantizer", "transformer"):
        if key not in d:
            raise ConfigError(f"codec config {name!r} lacks field {key!r}")
    for (section, key), allowed in _SUPPORTED.items():
        value = d[section].get(key)
        if value is not None and value not in allowed:
            raise ConfigError(
                f"codec config {name!r}: {section}.{key}={value!r} is not supported ({allowed})"
            )
    cfg = CodecConfig(
        sample_rate=int(d["sample_rate"]),
        channels=int(d["channels"]),
        frame_rate=float(d["frame_rate"]),
        seanet=dict(d["seanet"]),
        quantizer=dict(d["quantizer"]),
        transformer=dict(d["transformer"]),
        decoder=decoder_section(d.get("decoder"), name),
        encoder=encoder_section(d.get("encoder"), name),
        name=name,
        raw=copy.deepcopy(d),
    )
    if cfg.encoder is not None and cfg.hop_length % int(cfg.encoder["hop_length"]):
        raise ConfigError(
            f"codec config {name!r}: the stft encoder's hop {cfg.encoder['hop_length']} must divide the "
            f"encoder hop {cfg.hop_length} (the product of seanet.ratios)"
        )
    if cfg.channels != 1:
        raise ConfigError(f"codec config {name!r}: only mono is supported, got channels={cfg.channels}")
    ratio = cfg.encoder_frame_rate / cfg.frame_rate
    if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
        raise ConfigError(
            f"codec config {name!r}: encoder frame rate {cfg.encoder_frame_rate} is not an integer multiple "
            f"of frame_rate {cfg.frame_rate}"
        )
    if int(cfg.quantizer.get("n_q", 8)) <= cfg.n_q_semantic:
        raise ConfigError(f"codec config {name!r}: quantizer.n_q must exceed {cfg.n_q_semantic}")
    strides = cfg.quantizer.get("multi_rate_strides")
    if strides is not None:
        ok = isinstance(strides, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                               for x in strides)  # fmt: skip
        if not ok or len(strides) > int(cfg.quantizer.get("n_q", 8)) - cfg.n_q_semantic:
            raise ConfigError(
                f"codec config {name!r}: quantizer.multi_rate_strides must be a list of integers >= 1, one "
                f"at most per acoustic codebook, got {strides!r}"
            )
    return cfg


def _spectral_section(
    section: Any, name: str, side: str, kind: str, defaults: dict[str, Any]
) -> dict[str, Any] | None:
    """A config's ``encoder`` / ``decoder`` section checked and completed with its defaults (None: SEANet)."""
    if section is None:
        return None
    if not isinstance(section, dict) or section.get("kind") != kind:
        raise ConfigError(
            f"codec config {name!r}: {side} must be absent (SEANet) or {{'kind': '{kind}', ...}}"
        )
    unknown = set(section) - set(defaults)
    if unknown:
        raise ConfigError(f"codec config {name!r}: unknown {side} fields {sorted(unknown)}")
    out = {**defaults, **section}
    bad = [
        k
        for k, v in out.items()
        if k != "kind" and not (isinstance(v, int) and not isinstance(v, bool) and v > 0)
    ]
    if bad or out["n_fft"] < out["hop_length"] or out["n_fft"] % 2:
        raise ConfigError(
            f"codec config {name!r}: {side} fields must be positive integers with an even n_fft >= "
            f"hop_length, got {section}"
        )
    return out


def decoder_section(section: Any, name: str) -> dict[str, Any] | None:
    """A config's ``decoder`` section checked and completed with the iSTFT defaults (None: SEANet)."""
    return _spectral_section(section, name, "decoder", "istft", ISTFT_DEFAULTS)


def encoder_section(section: Any, name: str) -> dict[str, Any] | None:
    """A config's ``encoder`` section checked and completed with the STFT defaults (None: SEANet)."""
    return _spectral_section(section, name, "encoder", "stft", STFT_ENCODER_DEFAULTS)


def codec_config(config: str | os.PathLike | dict | CodecConfig) -> CodecConfig:
    """Resolve a preset name, a path to a Mimi-layout JSON, or a dict into a :class:`CodecConfig`."""
    if isinstance(config, CodecConfig):
        return config
    if isinstance(config, dict):
        return _from_dict(config, "dict")
    text = str(config)
    if text in PRESETS:
        return _from_dict(copy.deepcopy(PRESETS[text]), text)
    path = Path(text)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise ConfigError(f"codec config file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read codec config {path}: {exc}") from None
        return _from_dict(data, path.stem)
    raise ConfigError(
        f"unknown codec preset {text!r} (presets: {', '.join(sorted(PRESETS))}, or a JSON path)"
    )

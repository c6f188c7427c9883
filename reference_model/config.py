"""LM configuration: a Moshi-format config (preset name, JSON path or dict) read into a validated dataclass.

The field names are Moshi's own (``moshi/models/loaders.py``), so a released ``config.json`` loads as is.
Anything this model cannot honour (a layer scale, sinusoidal embeddings, a cross-attention fuser...) is
rejected with a :class:`ConfigError` naming the key, never silently ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

PRESETS_DIR = Path(__file__).with_name("presets")
LM_PRESETS: dict[str, str] = {
    "tiny": "tiny_lm.json",
    "moshi-7b": "moshi-7b.json",
    "moshi-2b": "moshi-2b.json",
    # the 7B's layer shapes and its whole depth transformer with 2 of its 32 temporal layers: per-layer
    # CPU ratios (quantization, GQA...) on the shapes that transfer to the 7B, in ~6 GB of fp32 weights
    "moshi-7b-shaped": "moshi-7b-shaped.json",
}

# Fields that fix the shapes of the weights: a config without one of them is an error.
REQUIRED = (
    "dim",
    "text_card",
    "n_q",
    "dep_q",
    "card",
    "num_heads",
    "num_layers",
    "hidden_scale",
    "context",
    "max_period",
    "gating",
    "norm",
    "positional_embedding",
    "delays",
    "depformer_dim",
    "depformer_num_heads",
    "depformer_num_layers",
    "depformer_multi_linear",
    "depformer_weights_per_step",
    "depformer_pos_emb",
)

# Keys Moshi accepts that only matter with a non-neutral value: accepted when neutral, else rejected.
NEUTRAL = {
    "layer_scale": None,
    "depformer_layer_scale": None,
    "norm_emb": False,
    "bias_proj": False,
    "demux_second_stream": False,
    "demux_second_text_stream": False,
    "depformer_weights_per_step_schedule": None,
    "depformer_low_rank_embeddings": None,
    "depformer_norm": None,
    "extra_heads_num_heads": 0,
    "cross_attention": False,
    "lora": False,
}
# Keys with no effect on inference here (Moshi ignores them too, or they only matter for training).
IGNORED = ("depformer_causal", "depformer_context", "extra_heads_dim", "lora_rank", "lora_scaling")

ACTIVATIONS = ("silu", "gelu", "relu", "sigmoid", "tanh")
NORMS = {"rms_norm_f32": 1e-8, "rms_norm": 1e-5}


@dataclass(frozen=True)
class LMConfig:
    dim: int
    text_card: int
    n_q: int
    dep_q: int
    card: int
    num_heads: int
    num_layers: int
    hidden_scale: float
    context: int
    max_period: float
    gating: str
    norm: str
    positional_embedding: str
    delays: tuple[int, ...]
    depformer_dim: int
    depformer_num_heads: int
    depformer_num_layers: int
    depformer_multi_linear: bool
    depformer_weights_per_step: bool
    depformer_pos_emb: str
    depformer_dim_feedforward: int | None = None
    depformer_max_period: float | None = None
    depformer_gating: str | None = None
    kv_repeat: int = 1
    depformer_kv_repeat: int | None = None
    existing_text_padding_id: int = 3
    existing_text_end_padding_id: int = 0
    causal: bool = True
    text_card_out: int | None = None
    conditioners: dict[str, Any] | None = None
    fuser: dict[str, Any] | None = None
    name: str = field(default="custom", compare=False)

    # --- derived sizes, computed exactly as Moshi does -------------------------------------------
    @property
    def num_kv_heads(self) -> int:
        return self.num_heads // self.kv_repeat

    @property
    def depformer_num_kv_heads(self) -> int:
        return self.depformer_num_heads // (self.depformer_kv_repeat or self.kv_repeat)

    @property
    def dim_feedforward(self) -> int:
        return int(self.hidden_scale * self.dim)

    @property
    def depformer_feedforward(self) -> int:
        if self.depformer_dim_feedforward is not None:
            return self.depformer_dim_feedforward
        return int(self.hidden_scale * self.depformer_dim)

    @property
    def depformer_steps(self) -> int:
        """Weight sets per depformer layer (one per codebook with weights_per_step)."""
        return self.dep_q if self.depformer_weights_per_step else 1

    @property
    def norm_eps(self) -> float:
        return NORMS[self.norm]

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("name")
        d["delays"] = list(self.delays)
        return {k: v for k, v in d.items() if v is not None}


def gated_hidden(dim: int, dim_feedforward: int) -> int:
    """Hidden width of Moshi's gated FFN (moshi/modules/gating.py: 21/8 when the FFN is 4x, else 2/3)."""
    if dim_feedforward == 4 * dim:
        return (21 * dim) // 8
    return (2 * dim_feedforward) // 3


def load_lm_config(config: str | os.PathLike | dict | LMConfig) -> LMConfig:
    """Read a preset name, a path to a Moshi-format JSON, or a dict; raise ConfigError on any problem."""
    if isinstance(config, LMConfig):
        return config
    name = "custom"
    if isinstance(config, dict):
        raw = dict(config)
    elif isinstance(config, (str, os.PathLike)):
        text = str(config)
        if text in LM_PRESETS:
            name, path = text, PRESETS_DIR / LM_PRESETS[text]
        elif text.endswith(".json") or os.sep in text or Path(text).is_file():
            path = Path(text)
            name = path.stem
        else:
            known = ", ".join(sorted(LM_PRESETS))
            raise ConfigError(f"unknown LM preset {text!r} (known presets: {known}; or a path to a .json)")
        if not path.is_file():
            raise ConfigError(f"LM config file not found: {path}")
        if path.suffix == ".safetensors":
            raise ConfigError(f"{path} is a weights file; an LM config is a preset name or a JSON file")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"LM config {path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"LM config {path} must hold a JSON object")
    else:
        raise ConfigError(
            f"LM config must be a preset name, a JSON path or a dict, got {type(config).__name__}"
        )
    return _from_dict(raw, name)


def _from_dict(raw: dict[str, Any], name: str) -> LMConfig:
    for key in REQUIRED:
        if key not in raw:
            raise ConfigError(f"LM config {name!r} is missing the field {key!r}")
    allowed = {f for f in LMConfig.__dataclass_fields__ if f != "name"}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in IGNORED:
            continue
        if key in NEUTRAL:
            if value != NEUTRAL[key]:
                raise ConfigError(f"LM config key {key!r}={value!r} is not supported (only {NEUTRAL[key]!r})")
            continue
        if key not in allowed:
            raise ConfigError(f"LM config key {key!r} is not supported by this model")
        kwargs[key] = value
    kwargs["delays"] = tuple(int(d) for d in kwargs["delays"])
    try:
        cfg = LMConfig(name=name, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"LM config {name!r}: {exc}") from None
    _validate(cfg)
    return cfg


def _validate(c: LMConfig) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"LM config {c.name!r}: {msg}")

    for key in ("dim", "text_card", "n_q", "dep_q", "card", "num_heads", "num_layers", "context"):
        need(isinstance(getattr(c, key), int) and getattr(c, key) > 0, f"{key!r} must be a positive integer")
    need(c.dep_q <= c.n_q, "'dep_q' must not exceed 'n_q'")
    need(len(c.delays) == c.n_q + 1, f"'delays' must have n_q + 1 = {c.n_q + 1} entries, got {len(c.delays)}")
    need(all(d >= 0 for d in c.delays), "'delays' must be non-negative")
    need(c.dim % c.num_heads == 0, "'dim' must be a multiple of 'num_heads'")
    need((c.dim // c.num_heads) % 2 == 0, "the head dimension must be even (RoPE)")
    need(c.depformer_dim % c.depformer_num_heads == 0, "'depformer_dim' must be a multiple of its heads")
    need(c.kv_repeat >= 1 and c.num_heads % c.kv_repeat == 0, "'kv_repeat' must divide 'num_heads'")
    dep_rep = c.depformer_kv_repeat or c.kv_repeat
    need(c.depformer_num_heads % dep_rep == 0, "the depformer 'kv_repeat' must divide its heads")
    need(c.norm in NORMS, f"'norm'={c.norm!r} is not supported (supported: {', '.join(NORMS)})")
    need(
        c.gating in ACTIVATIONS,
        f"'gating'={c.gating!r} is not supported (supported: {', '.join(ACTIVATIONS)})",
    )
    need(
        (c.depformer_gating or c.gating) in ACTIVATIONS,
        f"'depformer_gating'={c.depformer_gating!r} is not supported",
    )
    need(c.positional_embedding in ("rope", "none"), "'positional_embedding' must be 'rope' or 'none'")
    need(c.depformer_pos_emb in ("rope", "none"), "'depformer_pos_emb' must be 'rope' or 'none'")
    need(c.causal is True, "'causal' must be true for a streaming model")
    need(
        c.text_card_out in (None, c.text_card), "'text_card_out' different from 'text_card' is not supported"
    )
    if c.conditioners is not None or c.fuser is not None:
        need(c.conditioners is not None and c.fuser is not None, "'conditioners' and 'fuser' go together")
        assert c.fuser is not None and c.conditioners is not None
        extra = sorted(set(c.fuser) - {"sum"})
        need(not any(c.fuser.get(k) for k in extra), f"fuser method {extra!r} is not supported (only 'sum')")
        for cname, ccfg in c.conditioners.items():
            need(ccfg.get("type") == "lut", f"conditioner {cname!r} type {ccfg.get('type')!r} (only 'lut')")
            lut = ccfg.get("lut", {})
            for k in ("n_bins", "dim", "tokenizer"):
                need(k in lut, f"conditioner {cname!r} is missing the field {k!r}")
            need(lut["tokenizer"] == "noop", f"conditioner {cname!r}: only the 'noop' tokenizer is supported")
        for cname in c.fuser.get("sum", []):
            need(cname in c.conditioners, f"fuser sums the unknown conditioner {cname!r}")

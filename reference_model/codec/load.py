"""``load_codec``: build a MimiCodec from a preset / config and load a Moshi-format safetensors checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoint import load_into
from ..errors import CheckpointError, ConfigError
from .config import CodecConfig, codec_config, decoder_section, encoder_section
from .model import MimiCodec

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# Presets that ship trained weights in reference_model/weights/ (used when no checkpoint is given). The tiny
# default is istft-full2: the whole codec retrained twice with the causal iSTFT decoder, then its decoder
# alone (issue 31; the file's metadata names its decoder, so the "tiny" config adopts it), paired with the
# bundled LM trained on its codes (issue 36). Its predecessors stay beside it as suite variants:
# weights/tiny_codec_istft_full.safetensors (one cycle) and tiny_codec.safetensors (SEANet, the v1 codes).
BUNDLED = {
    "tiny": WEIGHTS_DIR / "tiny_codec_istft_full2.safetensors",
    "tiny-istft": WEIGHTS_DIR / "tiny_codec_istft.safetensors",
}


def resolved_checkpoint(config, checkpoint: str | os.PathLike | None) -> str | os.PathLike | None:
    """The file ``load_codec`` reads: ``checkpoint``, or the preset's bundled weights when there are some."""
    if checkpoint is None:
        name = codec_config(config).name
        if name in BUNDLED and BUNDLED[name].is_file():
            return BUNDLED[name]
    return checkpoint


def load_codec(
    config: str | os.PathLike | dict | CodecConfig,
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    num_codebooks: int | None = 8,
) -> MimiCodec:
    """Build the codec of ``config`` (preset "mimi" / "tiny", a Mimi-layout JSON path, or a dict).

        ``checkpoint``: a safetensors path (keys as moshi's MimiModel, e.g. the released Mimi weights); None
        loads the preset's bundled weights when they exist, else random weights from the current torch seed;
        "random" forces random weights. ``num_codebooks``: codebooks in use (encode output), 8 by default as
    moshi's ``get_mimi`` (what the LM consumes); None = all. Returns the codec in eval mode.
    """
    cfg = codec_config(config)
    checkpoint = resolved_checkpoint(cfg, checkpoint)
    if checkpoint is not None and str(checkpoint) != "random" and Path(checkpoint).is_file():
        cfg = with_checkpoint_structure(cfg, checkpoint)
    if checkpoint is None or str(checkpoint) == "random":
        codec = MimiCodec(cfg).to(device=device, dtype=dtype)
        codec.checkpoint = None
    else:
        if not Path(checkpoint).is_file():
            raise CheckpointError(f"codec checkpoint not found: {checkpoint}")
        with torch.device("meta"):
            codec = MimiCodec(cfg)
        load_into(codec, checkpoint, device=device, dtype=dtype)
        codec.checkpoint = str(checkpoint)
    codec.eval()
    codec.set_num_codebooks(codec.max_codebooks if num_codebooks is None else num_codebooks)
    return codec


# Quantizer fields that change what the weights compute without changing their keys: a checkpoint trained
# with one records it in its safetensors metadata, so that loading it needs no separate config. The same
# holds for a decoder or encoder other than SEANet (metadata "decoder" / "encoder": the config's section as
# JSON).
STRUCTURE_FIELDS = ("multi_rate_strides",)


def with_checkpoint_structure(cfg: CodecConfig, checkpoint: str | os.PathLike) -> CodecConfig:
    """``cfg`` with the structure fields the checkpoint's metadata records; a config that says otherwise
    is refused (CheckpointError), a checkpoint that records none leaves ``cfg`` as it is."""
    import copy
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(checkpoint), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # not safetensors: load_into names the problem
        return cfg
    recorded = {k: json.loads(meta[k]) for k in STRUCTURE_FIELDS if k in meta}
    sides = {
        side: (json.loads(meta[side]), check)
        for side, check in (("decoder", decoder_section), ("encoder", encoder_section))
        if side in meta
    }
    if not recorded and not sides:
        return cfg
    out = copy.deepcopy(cfg)
    for side, (section, check) in sides.items():  # the side the weights were trained as (spectral ones)
        mine = getattr(cfg, side)
        if mine is not None and mine != section:
            raise CheckpointError(
                f"codec checkpoint {checkpoint} has the {side} {section}, the config says {mine}"
            )
        try:
            setattr(out, side, check(section, str(checkpoint)))
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    for key, value in recorded.items():
        mine = out.quantizer.get(key)
        if mine is not None and list(mine) != list(value):
            raise CheckpointError(
                f"codec checkpoint {checkpoint} was trained with {key}={value}, the config says {mine}"
            )
        out.quantizer[key] = value
    return out

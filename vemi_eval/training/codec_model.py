"""The codec's set-up for training: warm start, the frozen encoder side, weight norm and its folding, the
data-dependent initialisation, and the digest that shows the codes unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch.nn.utils import parametrize

from reference_model.checkpoint import load_into
from reference_model.codec import MimiCodec
from reference_model.codec.conv import StreamingConv1d, StreamingConvTranspose1d
from reference_model.errors import CheckpointError

from ..data.codec_roundtrip import codebooks_in_use

ENCODER_SIDE = ("encoder", "encoder_transformer", "downsample", "quantizer")


def warm_start_into(codec: MimiCodec, path: Path) -> list[str]:
    """Load ``path`` into ``codec``; returns the top-level modules left at their fresh initialisation.

    Strict, except where the codec's encoder or decoder is of another kind than the checkpoint's (a SEANet
    codec's weights starting an iSTFT one, an iSTFT codec's starting a spectral-encoder one): then every
    other key of the codec must be in the file with its shape, and that side starts fresh (the recipe's
    ``train_parts`` says which parts learn)."""
    state, own = load_file(str(path)), codec.state_dict()

    def keys(d: dict, side: str) -> set[str]:
        return {k for k in d if k.startswith(side + ".")}

    fresh = [side for side in ("encoder", "decoder") if keys(own, side) != keys(state, side)]
    kept = {k: v for k, v in own.items() if not any(k.startswith(s + ".") for s in fresh)}
    wrong = [k for k, v in kept.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        what = "encoder side" if "encoder" not in fresh else "transformers and quantizer"
        raise CheckpointError(
            f"{path.name} does not hold this codec's {what}: {wrong[:3]} missing or reshaped"
        )
    if not fresh:
        # the codec's own dtype: committed weights may be float16 (a training must not run in it)
        load_into(codec, path, dtype=next(codec.parameters()).dtype)
        return []
    codec.load_state_dict({**own, **{k: state[k] for k in kept}}, strict=True)
    return fresh


def freeze_encoder_side(codec: MimiCodec) -> list[str]:
    """No gradient and eval mode (no EMA codebook updates, no dead-code restarts) for the modules that
    make the codes; returns their names. Called again after every switch to train mode."""
    names = []
    for name in ENCODER_SIDE:
        module = getattr(codec, name, None)
        if module is None:
            continue
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        names.append(name)
    return names


def codes_digest(codec: MimiCodec, audio: list[np.ndarray]) -> str:
    """sha256 (16 hex) of the codes of ``audio`` at every codebook: equal digests, same tokeniser."""
    h = hashlib.sha256()
    was_training = codec.training
    codec.eval()
    with torch.no_grad(), codebooks_in_use(codec, codec.max_codebooks):
        for a in audio:
            h.update(codec.encode(torch.from_numpy(a).view(1, 1, -1)).numpy().astype(np.int64).tobytes())
    codec.train(was_training)
    return h.hexdigest()[:16]


def _convs(codec: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in codec.modules() if isinstance(m, torch.nn.Conv1d | torch.nn.ConvTranspose1d)]


def add_weight_norm(codec: torch.nn.Module) -> None:
    """Weight-normalise every SEANet/resampling conv for training; not the quantizer's 1x1 projections,
    whose free gain would let the latent's scale run away from the EMA codebooks."""
    skip = {id(m) for m in codec.quantizer.modules()} if hasattr(codec, "quantizer") else set()
    for m in _convs(codec):
        if id(m) not in skip:
            torch.nn.utils.parametrizations.weight_norm(m, "weight", dim=0)


def plain_copy(codec: MimiCodec) -> MimiCodec:
    """A fresh codec with weight norm folded into the weights (moshi's released key layout).

    Not deepcopy + remove_parametrizations: the copy shares the parametrized class with the original, and
    removing the parametrization from it deletes the property from the original too."""
    state = {}
    for k, v in codec.state_dict().items():
        if ".parametrizations.weight." not in k:
            state[k] = v.detach().clone()
    for name, m in codec.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            state[f"{name}.weight"] = m.weight.detach().clone()
    plain = MimiCodec(codec.config)
    plain.load_state_dict(state)
    return plain.to(next(codec.parameters()).device).train(codec.training)


# --- initialisation -------------------------------------------------------------------------------
@torch.no_grad()
def unit_variance_init(codec: MimiCodec, x: torch.Tensor, target_std: float = 0.5) -> dict[str, float]:
    """Data-dependent init (LSUV, Mishkin & Matas 2016) of the SEANet convs and the resampling convs.

    PyTorch's default conv init has a gain of ~0.58 per layer, so at init the activations shrink ~10x
    through the encoder and again through the decoder: the ELUs run in their linear range and the
    decoded level starts 20-40 dB low; Adam then spends thousands of steps growing the weights back.
    Here each conv (in forward order, on a real batch ``x``) is rescaled so its output has
    ``target_std``; the decoder's last conv is rescaled to the input's std instead. Returns the scales."""
    down, up = getattr(codec, "downsample", None), getattr(codec, "upsample", None)
    parts = [p for p in (codec.encoder, down, up, codec.decoder) if p is not None]  # forward order
    kinds = StreamingConv1d | StreamingConvTranspose1d
    wrappers = [m for p in parts for m in p.modules() if isinstance(m, kinds)]
    last = codec.decoder.model[-1]
    names = {id(m): n for n, m in codec.named_modules()}
    scales: dict[str, float] = {}
    was = codec.training
    codec.eval()
    for m in wrappers:
        seen: list[torch.Tensor] = []
        handle = m.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
        codec.decode_latent(codec.encode_latent(x))
        handle.remove()
        std = float(seen[0].std())
        goal = float(x.std()) if m is last else target_std
        inner = m.conv.conv if isinstance(m, StreamingConv1d) else m.convtr.convtr
        if std > 0:
            inner.weight.mul_(goal / std)
            if inner.bias is not None:
                inner.bias.mul_(goal / std)
            scales[names[id(m)]] = round(goal / std, 4)
    codec.train(was)
    return scales

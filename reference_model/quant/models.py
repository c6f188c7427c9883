"""Which layers of the LM and the codec get quantized, and with what calibration.

LM: every linear of the temporal transformer (``transformer.*``), the depth transformer (``depformer.*``)
and the depth input projections (``depformer_in.*``). Kept in full precision: the embeddings (lookups,
not matmuls: weight-only int8 would save memory but no compute) and the output heads ``text_linear`` and
``linears.*``, whose rounding error lands directly on the logits that are sampled; they are ~2% of the
7B's weights (131M + 16.8M of 7.69B), so keeping them costs little memory.

Codec: the linears of the encoder/decoder transformers except the fused qkv ``in_projs.0`` (the codec's
``new_state`` reads that weight's dtype to allocate its KV state), and the quantizer's 1x1-conv
projections. SEANet convolutions (kernel > 1, and its kernel-1 convs, whose streaming wrapper also reads
``.weight`` for its state) and the strided/transposed resampling convs stay in full precision.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .calibrate import LinearInputStats, cache_key, cache_root, codec_calibration, lm_calibration
from .packing import QuantizedWeight
from .swap import DEFAULT_GROUP_SIZE, GPTQ_DAMP, QuantSummary, quantize_model

# Enough rows that every layer's Hessian has full rank (K <= 1024 here): 16 streams x 64 frames.
LM_CALIBRATION = {"frames": 64, "batch": 16, "seed": 0, "max_samples": 512}
CODEC_CALIBRATION = {"seconds": 16.0, "batch": 4, "seed": 0, "max_samples": 512}
# What each calibrated method reads of the statistics (GPTQ the Gram matrix, AWQ the row subsample).
METHOD_NEEDS = {"gptq": frozenset({"gram"}), "awq": frozenset({"samples"})}
CACHE_VERSION = 3  # of the quantized-weights files


def is_lm_quant_target(name: str, module: nn.Module) -> bool:
    return name.startswith(("transformer.", "depformer.", "depformer_in."))


def is_codec_quant_target(name: str, module: nn.Module) -> bool:
    if name.startswith("quantizer.") and name.endswith(("input_proj", "output_proj")):
        return True
    return "_transformer." in name and not name.endswith("in_projs.0")


def quantize_lm(
    lm: nn.Module, bits: int, method: str = "rtn", codec=None, kernel: str = "auto"
) -> QuantSummary:
    """Quantize the LM's transformer linears in place, run by ``kernel`` (:data:`.swap.KERNELS`); GPTQ/AWQ
    calibrate on the LM's own streaming (user codes from ``codec`` on speech when given). Returns what was
    done (``QuantSummary``)."""
    recipe = {"kind": "lm", **LM_CALIBRATION, "codec": None if codec is None else _codec_id(codec)}

    def calibrate() -> dict[str, LinearInputStats]:
        needs = METHOD_NEEDS[method]
        return lm_calibration(lm, codec, include=is_lm_quant_target, needs=needs, **LM_CALIBRATION)

    return quantize_cached(lm, bits, method, is_lm_quant_target, recipe, calibrate, kernel)


def quantize_codec(codec: nn.Module, bits: int, method: str = "rtn", kernel: str = "auto") -> QuantSummary:
    """Quantize the codec's transformer linears and quantizer projections in place."""

    def calibrate() -> dict[str, LinearInputStats]:
        needs = METHOD_NEEDS[method]
        return codec_calibration(codec, include=is_codec_quant_target, needs=needs, **CODEC_CALIBRATION)

    recipe = {"kind": "codec", **CODEC_CALIBRATION}
    return quantize_cached(codec, bits, method, is_codec_quant_target, recipe, calibrate, kernel)


def quantize_cached(
    model: nn.Module,
    bits: int,
    method: str,
    include: Callable[[str, nn.Module], bool],
    recipe: dict,
    calibrate: Callable[[], dict[str, LinearInputStats]],
    kernel: str = "auto",
) -> QuantSummary:
    """RTN directly; GPTQ/AWQ from the quantized-weights cache when this model (by the hash of its weights)
    was quantized with this method and recipe before, else calibrate, quantize and store the codes (the
    codes do not depend on the kernel that runs them)."""
    if method == "rtn":
        return quantize_model(model, bits, method, include=include, kernel=kernel)
    root = cache_root()
    path = None
    if root is not None:
        full = {"v": CACHE_VERSION, "bits": bits, "method": method, "group": DEFAULT_GROUP_SIZE, **recipe}
        full["damp"] = GPTQ_DAMP
        path = root / f"qweights-{cache_key(model, full)}.safetensors"  # keyed on the fp weights
    if path is not None and path.is_file():
        summary = quantize_model(
            model, bits, method, include=include, precomputed=load_codes(path), kernel=kernel
        )
        summary.cache = "hit"
        return summary
    produced: dict[str, QuantizedWeight] = {}
    summary = quantize_model(
        model, bits, method, include=include, stats=calibrate(), produced=produced, kernel=kernel
    )
    if path is not None:
        save_codes(path, produced)
        summary.cache = "miss"
    return summary


def save_codes(path: Path, codes: dict[str, QuantizedWeight]) -> None:
    """The codes of every quantized layer as safetensors (atomic: a concurrent reader never sees half)."""
    from safetensors.torch import save_file

    flat: dict[str, torch.Tensor] = {}
    for name, qw in codes.items():
        flat[f"{name}/q"] = qw.q
        flat[f"{name}/scales"] = qw.scales
        flat[f"{name}/format"] = torch.tensor([qw.bits, qw.group_size])
        if qw.zeros is not None:
            flat[f"{name}/zeros"] = qw.zeros
        if qw.input_scale is not None:
            flat[f"{name}/input_scale"] = qw.input_scale
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in flat.items()}, str(tmp))
    tmp.replace(path)


def load_codes(path: Path) -> dict[str, QuantizedWeight]:
    from safetensors.torch import load_file

    flat = load_file(str(path))
    out = {}
    for name in {k.rsplit("/", 1)[0] for k in flat}:
        bits, group = (int(v) for v in flat[f"{name}/format"])
        out[name] = QuantizedWeight(
            bits,
            group,
            flat[f"{name}/q"],
            flat[f"{name}/scales"],
            flat.get(f"{name}/zeros"),
            flat.get(f"{name}/input_scale"),
        )
    return out


def _codec_id(codec: nn.Module) -> str:
    from .calibrate import model_fingerprint

    return model_fingerprint(codec)[:16]

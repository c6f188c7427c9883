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

from torch import nn

from .calibrate import cached_stats, codec_calibration, lm_calibration
from .swap import QuantSummary, quantize_model

# Enough rows that every layer's Hessian has full rank (K <= 1024 here): 16 streams x 64 frames.
LM_CALIBRATION = {"frames": 64, "batch": 16, "seed": 0, "max_samples": 512}
CODEC_CALIBRATION = {"seconds": 16.0, "batch": 4, "seed": 0, "max_samples": 512}


def is_lm_quant_target(name: str, module: nn.Module) -> bool:
    return name.startswith(("transformer.", "depformer.", "depformer_in."))


def is_codec_quant_target(name: str, module: nn.Module) -> bool:
    if name.startswith("quantizer.") and name.endswith(("input_proj", "output_proj")):
        return True
    return "_transformer." in name and not name.endswith("in_projs.0")


def quantize_lm(lm: nn.Module, bits: int, method: str = "rtn", codec=None) -> QuantSummary:
    """Quantize the LM's transformer linears in place; GPTQ/AWQ calibrate on the LM's own streaming
    (user codes from ``codec`` on speech when given). Returns what was done (``QuantSummary``)."""
    stats = None
    if method != "rtn":
        recipe = {"kind": "lm", **LM_CALIBRATION, "codec": None if codec is None else _codec_id(codec)}
        stats = cached_stats(
            lm, recipe, lambda: lm_calibration(lm, codec, include=is_lm_quant_target, **LM_CALIBRATION)
        )
    summary = quantize_model(lm, bits, method, include=is_lm_quant_target, stats=stats)
    return summary


def quantize_codec(codec: nn.Module, bits: int, method: str = "rtn") -> QuantSummary:
    """Quantize the codec's transformer linears and quantizer projections in place."""
    stats = None
    if method != "rtn":
        recipe = {"kind": "codec", **CODEC_CALIBRATION}
        stats = cached_stats(
            codec,
            recipe,
            lambda: codec_calibration(codec, include=is_codec_quant_target, **CODEC_CALIBRATION),
        )
    summary = quantize_model(codec, bits, method, include=is_codec_quant_target, stats=stats)
    return summary


def _codec_id(codec: nn.Module) -> str:
    from .calibrate import model_fingerprint

    return model_fingerprint(codec)[:16]

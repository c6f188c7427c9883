"""Weight-only quantization flags (gpt-fast's ``quantize.py``): ``int8[=rtn|gptq|awq]`` and
``int4[=...]`` for the LM's transformer linears, ``codec-int8[=...]`` and ``codec-int4[=...]`` for the
codec's transformer linears and quantizer projections (SEANet convolutions stay in full precision).

int8: one scale per output channel. int4: groups of 128 inputs, asymmetric (scale + zero). Methods: RTN,
GPTQ (Frantar et al. 2022) and AWQ (Lin et al. 2023), calibrated on the model's own streaming. The
algorithms, packing and kernels are the shared library :mod:`reference_model.quant`; which layers are
quantized is :mod:`reference_model.quant.models`.

Order: after ``attn`` and ``gqa`` (GQA pools the fp projections that quantization then packs), before
``mod`` (routers are fitted on the quantized variant).
"""

from __future__ import annotations

import torch

from ..report import QuantReport
from . import FlagError, FlagSpec, register


def parse_method(value: str | None) -> str:
    """Quantization method of the weight flags: rtn (default), gptq or awq."""
    from reference_model.quant.swap import METHODS

    method = (value or "rtn").strip().lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    return method


def _codec_parser(bits: int):
    def parse(value: str | None) -> tuple[int, str]:
        return bits, parse_method(value)

    return parse


for _bits in (8, 4):
    _layout = "per channel" if _bits == 8 else "group 128"
    # (name, what it quantizes, parser, group of flags that exclude each other, order, apply function)
    for _name, _what, _parse, _group, _order, _apply in (
        (f"int{_bits}", f"LM linears to weight-only int{_bits}, {_layout} (rtn | gptq | awq, calibrated on "
         "own streaming)", parse_method, "lm weights", 30, f"apply_int{_bits}"),
        (f"codec-int{_bits}", f"codec transformer linears + quantizer projections to weight-only int{_bits} "
         "(rtn | gptq | awq)", _codec_parser(_bits), "codec weights", 60, "apply_codec"),
    ):
        register(
            FlagSpec(
                name=_name,
                module=__name__.rsplit(".", 1)[1],
                stage="model",
                summary=_what,
                parse=_parse,
                default="rtn",
                group=_group,
                order=_order,
                apply_name=_apply,
            )
        )


def check_dtype(bits: int, device: torch.device, dtype: torch.dtype) -> None:
    """int4 on CUDA runs tinygemm (``_weight_int4pack_mm``), which takes bf16 only: in another dtype the
    layers would silently fall back to the slow reference layout. Refuse in one line instead."""
    if bits == 4 and device.type == "cuda" and dtype != torch.bfloat16:
        raise FlagError(
            f"int4 on CUDA needs bfloat16 (the int4 kernel is bf16 only; the model is "
            f"{str(dtype).removeprefix('torch.')}): run with --dtype bfloat16"
        )


def apply_int8(lm, codec, method: str) -> QuantReport:
    return quantize_lm_flag(lm, codec, 8, method)


def apply_int4(lm, codec, method: str) -> QuantReport:
    return quantize_lm_flag(lm, codec, 4, method)


def quantize_lm_flag(lm, codec, bits: int, method: str) -> QuantReport:
    from reference_model.quant.models import quantize_lm

    check_dtype(bits, lm.device, lm.dtype)
    return QuantReport(target="lm", summary=quantize_lm(lm, bits, method, codec=codec))


def apply_codec(lm, codec, value: tuple[int, str]) -> QuantReport:
    """codec-int8 / codec-int4: value = (bits, method)."""
    from reference_model.quant.models import quantize_codec

    bits, method = value
    p = next(codec.parameters())
    check_dtype(bits, p.device, p.dtype)
    return QuantReport(target="codec", summary=quantize_codec(codec, bits, method))

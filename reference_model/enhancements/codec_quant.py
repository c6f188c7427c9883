"""``codec-int8[=rtn|gptq|awq]`` / ``codec-int4[=...]``: weight-only quantization of the codec's
transformer linears and quantizer projections (SEANet convolutions stay in full precision)."""

from __future__ import annotations

from . import FlagSpec, register
from .int8 import parse_method


def _parser(bits: int):
    def parse(value: str | None) -> tuple[int, str]:
        return bits, parse_method(value)

    return parse


for _bits in (8, 4):
    register(
        FlagSpec(
            name=f"codec-int{_bits}",
            module=__name__.rsplit(".", 1)[1],
            stage="model",
            summary=f"codec transformer linears + quantizer projections to weight-only int{_bits} "
            "(rtn | gptq | awq)",
            parse=_parser(_bits),
            default="rtn",
            group="codec weights",
        )
    )


def apply(lm, codec, value: tuple[int, str]) -> None:
    from reference_model.quant.models import quantize_codec

    bits, method = value
    quantize_codec(codec, bits, method)

"""``int4[=rtn|gptq|awq]``: weight-only int4 (groups of 128 inputs, asymmetric) for the LM's linears."""

from __future__ import annotations

from . import FlagSpec, register
from .int8 import parse_method

register(
    FlagSpec(
        name="int4",
        module=__name__.rsplit(".", 1)[1],
        stage="model",
        summary="LM linears to weight-only int4, group 128 (rtn | gptq | awq, calibrated on own streaming)",
        parse=parse_method,
        default="rtn",
        group="lm weights",
    )
)


def apply(lm, codec, value: str) -> None:
    from reference_model.quant.models import quantize_lm

    quantize_lm(lm, 4, value, codec=codec)

"""``int8[=rtn|gptq|awq]``: weight-only int8 (per output channel) for the LM's transformer linears."""

from __future__ import annotations

from . import FlagSpec, register


def parse_method(value: str | None) -> str:
    """Quantization method of the weight flags: rtn (default), gptq or awq."""
    from reference_model.quant.swap import METHODS

    method = (value or "rtn").strip().lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    return method


register(
    FlagSpec(
        name="int8",
        module=__name__.rsplit(".", 1)[1],
        stage="model",
        summary="LM linears to weight-only int8 per channel (rtn | gptq | awq, calibrated on own streaming)",
        parse=parse_method,
        default="rtn",
        group="lm weights",
    )
)


def apply(lm, codec, value: str) -> None:
    from reference_model.quant.models import quantize_lm

    quantize_lm(lm, 8, value, codec=codec)

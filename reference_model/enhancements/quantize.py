"""Weight-only quantization flags (gpt-fast's ``quantize.py``): ``int8[=rtn|gptq|awq]`` and
``int4[=...]`` for the LM's transformer linears, ``codec-int8[=...]`` and ``codec-int4[=...]`` for the
codec's transformer linears and quantizer projections (SEANet convolutions stay in full precision).

int8: one scale per output channel. int4: groups of 128 inputs, asymmetric (scale + zero). Methods: RTN,
GPTQ (Frantar et al. 2022) and AWQ (Lin et al. 2023), calibrated on the model's own streaming. The
algorithms, packing and kernels are the shared library :mod:`reference_model.quant`; which layers are
quantized is :mod:`reference_model.quant.models`.

Value: ``METHOD[:KERNEL]`` (``int8=gptq``, ``int8=gptq:dynamic``, ``int4=rtn:fp32``; a kernel alone means
RTN: ``int8=dynamic``). Kernels (:data:`reference_model.quant.swap.KERNELS`): ``auto`` (default) runs the
weight-only kernel in the activation dtype it is fastest in on the device (CPU: bf16 for both packed
kernels wherever they take the shape; see ``benchmarks/bench_quant.py --only kernels``); ``fp32`` /
``bf16`` force that activation dtype; ``dynamic`` (int8, CPU) runs fbgemm's W8A8 kernel, which also
quantizes the activations (another arithmetic, so it is asked for, never picked by ``auto``).

Order: after ``attn`` and ``gqa`` (GQA pools the fp projections that quantization then packs), before
``mod`` (routers are fitted on the quantized variant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..report import QuantReport
from . import FlagError, FlagSpec, register


@dataclass(frozen=True)
class QuantChoice:
    """A weight flag's value: how the codes are chosen and which kernel runs them."""

    bits: int
    method: str = "rtn"
    kernel: str = "auto"


def parse_choice(bits: int, value: str | None) -> QuantChoice:
    """``METHOD[:KERNEL]``, or a kernel alone (RTN codes)."""
    from reference_model.quant.swap import KERNELS, METHODS, check_kernel

    parts = [p.strip().lower() for p in (value or "rtn").split(":")]
    if len(parts) == 1 and parts[0] in KERNELS:
        parts = ["rtn", parts[0]]
    method, kernel = parts[0], (parts[1] if len(parts) > 1 else "auto")
    if len(parts) > 2 or method not in METHODS:
        raise ValueError(f"expected METHOD[:KERNEL], method one of {', '.join(METHODS)}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}")
    check_kernel(bits, kernel)
    return QuantChoice(bits, method, kernel)


def _parser(bits: int):
    def parse(value: str | None) -> QuantChoice:
        return parse_choice(bits, value)

    return parse


for _bits in (8, 4):
    _layout = "per channel" if _bits == 8 else "group 128"
    _kernels = "auto | fp32 | bf16 | dynamic" if _bits == 8 else "auto | fp32 | bf16"
    # (name, what it quantizes, parser, group of flags that exclude each other, order, apply function)
    for _name, _what, _parse, _group, _order, _apply in (
        (
            f"int{_bits}",
            f"LM linears to weight-only int{_bits}, {_layout} (rtn | gptq | awq, calibrated on "
            f"own streaming; :kernel {_kernels})",
            _parser(_bits),
            "lm weights",
            30,
            "apply_lm",
        ),
        (
            f"codec-int{_bits}",
            f"codec transformer linears + quantizer projections to weight-only int{_bits} "
            f"(rtn | gptq | awq; :kernel {_kernels})",
            _parser(_bits),
            "codec weights",
            60,
            "apply_codec",
        ),
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


def check_device(choice: QuantChoice, device: torch.device, dtype: torch.dtype) -> None:
    """The kernel can run here: int4 on CUDA needs bf16 (:func:`check_dtype`), the dynamic kernel a CPU."""
    check_dtype(choice.bits, device, dtype)
    if choice.kernel == "dynamic" and device.type != "cpu":
        raise FlagError(f"the dynamic int8 kernel is fbgemm's, CPU only (the model is on {device.type})")
    if choice.kernel == "dynamic":
        from reference_model.quant.dynamic import dynamic_int8_ok

        if not dynamic_int8_ok():
            raise FlagError("this torch build has no working dynamic int8 linear (quantized::linear_dynamic)")


def check_dtype(bits: int, device: torch.device, dtype: torch.dtype) -> None:
    """int4 on CUDA runs tinygemm (``_weight_int4pack_mm``), which takes bf16 only: in another dtype the
    layers would silently fall back to the slow reference layout. Refuse in one line instead."""
    if bits == 4 and device.type == "cuda" and dtype != torch.bfloat16:
        raise FlagError(
            f"int4 on CUDA needs bfloat16 (the int4 kernel is bf16 only; the model is "
            f"{str(dtype).removeprefix('torch.')}): run with --dtype bfloat16"
        )


def apply_lm(lm, codec, choice: QuantChoice) -> QuantReport:
    """int8 / int4."""
    from reference_model.quant.models import quantize_lm

    check_device(choice, lm.device, lm.dtype)
    summary = quantize_lm(lm, choice.bits, choice.method, codec=codec, kernel=choice.kernel)
    return QuantReport(target="lm", summary=summary)


def apply_codec(lm, codec, choice: QuantChoice) -> QuantReport:
    """codec-int8 / codec-int4."""
    from reference_model.quant.models import quantize_codec

    p = next(codec.parameters())
    check_device(choice, p.device, p.dtype)
    summary = quantize_codec(codec, choice.bits, choice.method, kernel=choice.kernel)
    return QuantReport(target="codec", summary=summary)

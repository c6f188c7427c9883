"""Weight-only int8/int4 quantization (RTN, GPTQ, AWQ) and a compressed KV cache, gpt-fast style.

Layout: :mod:`.packing` (integer formats, int4 nibble packing), :mod:`.linear` (the quantized layers and
their aten kernels), :mod:`.rtn`, :mod:`.gptq`, :mod:`.awq` (how codes are chosen), :mod:`.calibrate`
(what the layers see while the model streams), :mod:`.swap` (put quantized layers in a model),
:mod:`.models` (which layers of the LM and the codec), :mod:`.kv_cache` (int8 KV cache with a window).
"""

from __future__ import annotations

from .awq import awq_quantize
from .gptq import gptq_quantize
from .linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear, tensor_bytes
from .packing import QuantizedWeight, pack_int4, quantize_weight, unpack_int4
from .rtn import rtn_quantize
from .swap import METHODS, QuantSummary, quantize_model

__all__ = [
    "METHODS",
    "Int4WeightOnlyLinear",
    "Int8WeightOnlyLinear",
    "QuantSummary",
    "QuantizedWeight",
    "awq_quantize",
    "gptq_quantize",
    "pack_int4",
    "quantize_model",
    "quantize_weight",
    "rtn_quantize",
    "tensor_bytes",
    "unpack_int4",
]

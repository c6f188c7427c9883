"""``attn=eager|sdpa|flash``: the attention kernel of every LM attention layer (temporal and depth).

* ``sdpa`` (the default without the flag): ``torch.nn.functional.scaled_dot_product_attention``.
* ``eager``: explicit ``q @ k^T``, softmax in fp32, ``@ v``: the readable reference.
* ``flash``: flash-attn (Dao et al.), CUDA with fp16/bf16 only. A step whose items share one history
  runs ``flash_attn_func``; a step that needs per-item lengths (a batch where only some streams were
  reset, the static-shape step of ``cuda-graphs`` and ``compile``) runs ``flash_attn_with_kvcache`` with
  per-item ``cache_seqlens``. Only masks flash cannot express (several queries with a causal mask in the
  speculative verifier and the teacher-forced prefill, holes left by ``mod``) fall back to sdpa.
  Which kernel ran in which transformer is counted per layer (``duplex.report().attention_kernels``).

All three compute the same function; the flag changes speed and memory, and tests check the outputs
agree (eager vs sdpa within 1e-5).
"""

from __future__ import annotations

import torch

from ..report import AttentionReport
from . import FlagError, FlagSpec, register

BACKENDS = ("eager", "sdpa", "flash")


def _parse(value: str | None) -> str:
    if value not in BACKENDS:
        raise ValueError(f"choose one of {', '.join(BACKENDS)}")
    return value


register(
    FlagSpec(
        name="attn",
        module=__name__.rsplit(".", 1)[1],
        stage="model",
        summary="LM attention kernel: eager (matmul+softmax), sdpa (PyTorch fused), flash (flash-attn, CUDA)",
        parse=_parse,
        group="attention backend",
        cuda_values=frozenset({"flash"}),
        order=10,
    )
)


def apply(lm, codec, value: str) -> AttentionReport:
    if value == "flash":
        if lm.device.type != "cuda":
            raise FlagError(f"attn=flash needs a CUDA device (the LM is on {lm.device.type})")
        if lm.dtype not in (torch.float16, torch.bfloat16):
            raise FlagError(
                f"attn=flash needs fp16 or bf16 (the LM is {str(lm.dtype).removeprefix('torch.')}): "
                "run with --dtype bfloat16"
            )
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise FlagError(
                "attn=flash needs the flash-attn package (pip install 'vemi-eval[gpu]')"
            ) from None
    for attn in lm.transformer.attentions() + lm.depformer.attentions():
        attn.backend = value
    return AttentionReport(backend=value)

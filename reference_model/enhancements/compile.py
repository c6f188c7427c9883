"""``compile[=MODE]``: torch.compile of the streaming step's hot parts (gpt-fast's main speed-up).

Compiled: the temporal transformer step (``streamer.temporal_step``), the whole depth stage with its
sampling (``streamer.depformer_sample``: 8 codebook steps unrolled into one graph), and the codec's
streaming encode/decode (``duplex.codec_encode`` / ``codec_decode``). The Python glue of a step (token
cache, delays) stays eager.

MODE: ``default`` (CPU and CUDA) and ``max-autotune-no-cudagraphs`` (autotuned kernels); both combine
with the ``cuda-graphs`` flag, which captures what compile made. ``reduce-overhead`` and
``max-autotune`` are refused with the reason: they make inductor capture CUDA graphs of its own, and the
streaming step mutates its KV caches in place (inductor then skips the graph or re-records it) while
the eager attention span grows every frame (a new shape, a new graph, each frame); ``cuda-graphs``
captures the static-shape step instead. CPU needs a C++ compiler (inductor writes C++), CUDA needs
triton; without them the flag stops with one line.

Compilation happens in ``apply``: a warm-up runs the step on silence (with a partial reset when the batch
has several streams, so the ragged-attention path compiles too), then every stream is reset and the RNG
state restored. Its wall time is the report's ``CompileReport.compile_s``, apart from steady state.

Order: after ``speculative`` (a compiled depth stage would be replaced), before ``cuda-graphs``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import torch

from ..report import CompileReport
from . import FlagError, FlagSpec, register

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_ONLY_MODES = ("reduce-overhead", "max-autotune")  # they capture CUDA graphs (refused, see above)
PARTS = ("temporal", "depformer", "codec")
WARMUP_STEPS = 4  # > max_delay + 1, so that every branch of a step (None output, real tokens) has run


def _parse(value: str | None) -> str:
    mode = value or "default"
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r} (known: {', '.join(MODES)})")
    return mode


register(
    FlagSpec(
        name="compile",
        module=__name__.rsplit(".", 1)[1],
        stage="runtime",
        summary="torch.compile the temporal step, the depformer loop with sampling, codec encode/decode",
        parse=_parse,
        default="default",
        order=80,
    )
)

GRAPH_MODE_REASON = (
    "captures CUDA graphs of its own, which the streaming step defeats (KV caches mutated in place, "
    "an attention span that grows every frame): use compile=default or max-autotune-no-cudagraphs, "
    "with the cuda-graphs flag for graphs"
)


def check_backend(device: torch.device, mode: str) -> None:
    """Raise FlagError (one line) when torch.compile cannot run here, before anything is compiled."""
    if device.type == "cpu":
        if mode in CUDA_ONLY_MODES:
            raise FlagError(
                f"compile mode {mode!r} captures CUDA graphs: CUDA only (on CPU use compile=default)"
            )
        compilers = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(c and shutil.which(c) for c in compilers):
            raise FlagError(
                "compile on CPU needs a C++ compiler for inductor (none of g++, c++, clang++ found)"
            )
    elif device.type == "cuda":
        if mode in CUDA_ONLY_MODES:
            raise FlagError(f"compile={mode} {GRAPH_MODE_REASON}")
        if importlib.util.find_spec("triton") is None:
            raise FlagError("compile on CUDA needs triton (not installed)")
    else:
        raise FlagError(f"compile supports cpu and cuda devices, not {device.type!r}")


def compile_parts(duplex, mode: str = "default", parts: tuple[str, ...] = PARTS) -> None:
    """Replace the hot callables of ``duplex`` by compiled ones (lazy: compiled on first call)."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown compile part {unknown[0]!r} (known: {', '.join(PARTS)})")
    opts = dict(mode=mode, fullgraph=False)
    streamer = duplex.streamer
    if "temporal" in parts:
        streamer.temporal_step = _compile_temporal(streamer.temporal_step, opts)
    if "depformer" in parts:
        streamer.depformer_sample = torch.compile(streamer.depformer_sample, **opts)
    if "codec" in parts:
        duplex.codec_encode = torch.compile(duplex.codec_encode, **opts)
        duplex.codec_decode = torch.compile(duplex.codec_decode, **opts)


def _compile_temporal(forward_temporal, opts: dict):
    """Compile the temporal step in its ragged form (``common=None``: cache writes by scatter at tensor
    positions, attention mask from the slot positions). The host-side ``common`` position is an int that
    indexes the cache: dynamo would specialise on it and recompile every step until its recompile limit
    (8), then silently run eager. ``span`` stays: one recompile makes it a dynamic size."""
    from ..lm import StepPositions

    compiled = torch.compile(forward_temporal, **opts)

    def ragged_forward_temporal(tokens, step, caches, condition=None):
        ragged = StepPositions(step.positions, common=None, span=step.span, cos=step.cos, sin=step.sin)
        return compiled(tokens, ragged, caches, condition)

    return ragged_forward_temporal


def apply(duplex, mode: str) -> CompileReport:
    check_backend(duplex.device, mode)
    compile_parts(duplex, mode)
    steps = max(WARMUP_STEPS, duplex.max_delay + 3)
    seconds = duplex.warm_up(steps)
    return CompileReport(mode=mode, warmup_steps=steps, compile_s=seconds)

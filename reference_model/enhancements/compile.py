"""``compile[=MODE]``: torch.compile of the streaming step's hot parts (gpt-fast's main speed-up).

Compiled: the temporal transformer step (``lm.forward_temporal``), the whole depth stage with its
sampling (``streamer.depformer_sample``: 8 codebook steps unrolled into one graph), and the codec's
streaming encode/decode. The Python glue of a step (token cache, delays) stays eager.

MODE: ``default`` (CPU and CUDA); on CUDA also ``reduce-overhead`` (inductor's own CUDA graphs: do not
combine with the ``cuda-graphs`` flag), ``max-autotune`` (autotuned kernels + CUDA graphs, long compile)
and ``max-autotune-no-cudagraphs`` (autotuned kernels, combines with ``cuda-graphs``). CPU needs a C++
compiler (inductor writes C++), CUDA needs triton; without them the flag stops with one line.

Compilation happens in ``apply``: a warm-up runs the step on silence (with a partial reset when the batch
has several streams, so the ragged-attention path compiles too), then every stream is reset and the RNG
state restored. Its wall time is ``duplex.warmup_stats["compile_s"]``, reported apart from steady state.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time

import torch

from . import FlagError, FlagSpec, register

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_ONLY_MODES = ("reduce-overhead", "max-autotune")  # they capture CUDA graphs
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
    )
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
    if "temporal" in parts:
        duplex.lm.forward_temporal = _compile_temporal(duplex.lm.forward_temporal, opts)
    if "depformer" in parts:
        duplex.streamer.depformer_sample = torch.compile(duplex.streamer.depformer_sample, **opts)
    if "codec" in parts:
        duplex.codec_streamer.encode = torch.compile(duplex.codec_streamer.encode, **opts)
        duplex.codec_streamer.decode = torch.compile(duplex.codec_streamer.decode, **opts)


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


def warm_up(duplex, steps: int = WARMUP_STEPS) -> float:
    """Run ``steps`` frames of silence (compiling what is lazy), reset every stream, restore the RNG.

    Returns the wall seconds. The streams and the random state afterwards are as before the warm-up, so a
    warmed-up model gives the same tokens as a fresh one.
    """
    cpu_rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if duplex.device.type == "cuda" else None
    pcm = torch.zeros(duplex.batch_size, 1, duplex.frame_size, device=duplex.device, dtype=duplex.spec.dtype)
    duplex.reset()
    duplex.sync()
    t0 = time.perf_counter()
    for i in range(steps):
        if i == steps // 2 and duplex.batch_size > 1:
            mask = torch.zeros(duplex.batch_size, dtype=torch.bool)
            mask[0] = True
            duplex.reset(mask)  # ragged positions: the masked attention path
        tokens = duplex.lm_step(duplex.encode_user(pcm))
        if tokens is not None:
            # rows of a just-reset stream are -2 (not generated yet): decode them as code 0, as serving does
            duplex.decode_model(tokens.clamp_min(0))
    duplex.sync()
    elapsed = time.perf_counter() - t0
    duplex.reset()
    torch.random.set_rng_state(cpu_rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)
    return elapsed


def apply(duplex, mode: str) -> None:
    if getattr(duplex, "cuda_graphs", None) is not None:
        raise FlagError(
            "write compile before cuda-graphs in the flag list (graphs capture what compile made)"
        )
    check_backend(duplex.device, mode)
    compile_parts(duplex, mode)
    steps = max(WARMUP_STEPS, duplex.max_delay + 3)
    seconds = warm_up(duplex, steps)
    stats = getattr(duplex, "warmup_stats", {})
    stats.update({"compile_s": seconds, "compile_mode": mode, "compile_warmup_steps": steps})
    duplex.warmup_stats = stats

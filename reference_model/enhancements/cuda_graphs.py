"""``cuda-graphs`` (seed doc 5.3): replay the streaming step's hot parts from CUDA graphs (as moshi does).

Captured after one eager warm-up call each, with static input/output buffers: the temporal transformer
step, the whole depth stage WITH its sampling (8 codebook steps, the default CUDA generator registered
with the graph), and the codec's streaming encode and decode. The temporal step is captured in its
static-shape form (attention over the whole cache capacity with a per-item mask, cache writes by
scatter), so one graph serves every position and every mix of reset streams.

Capture happens in ``apply`` (a short warm-up on silence, then every stream reset and the RNG state
restored), so a part that cannot be captured fails at build time; ``duplex.warmup_stats`` gets
``cuda_graphs_s`` (warm-up + capture wall time). Combines with ``compile=default`` or
``compile=max-autotune-no-cudagraphs`` written BEFORE it; not with the compile modes that capture graphs
themselves.

UNVERIFIED: written without a GPU. On CPU the flag is refused by the flag parser (requires_cuda).
"""

from __future__ import annotations

import time

import torch

from . import FlagError, FlagSpec, register

register(
    FlagSpec(
        name="cuda-graphs",
        module=__name__.rsplit(".", 1)[1],
        stage="runtime",
        summary="CUDA graphs for the temporal step, depformer loop with sampling, codec encode/decode",
        requires_cuda=True,
    )
)

WARMUP_STEPS = 5  # eager warm-up (1), capture (1), replays: all within the first max_delay + 3 frames


def graph_parts(duplex) -> dict:
    """Wrap the hot callables of ``duplex`` in GraphedCallables; returns them by part name."""
    from ..cuda_graphs import GraphedCallable
    from ..lm import StepPositions

    lm, streamer, codec_streamer = duplex.lm, duplex.streamer, duplex.codec_streamer
    capacity = lm.context
    temporal = lm.forward_temporal

    def temporal_static(tokens, positions, cos, sin, caches, condition):
        # common=None, span=capacity: no host-side position enters the graph, shapes never change
        step = StepPositions(positions, common=None, span=capacity, cos=cos, sin=sin)
        return temporal(tokens, step, caches, condition)

    parts = {
        "temporal": GraphedCallable(temporal_static, name="temporal"),
        "depformer": GraphedCallable(streamer.depformer_sample, name="depformer"),
        "codec_encode": GraphedCallable(codec_streamer.encode, name="codec_encode"),
        "codec_decode": GraphedCallable(codec_streamer.decode, name="codec_decode"),
    }

    def forward_temporal(tokens, step, caches, condition=None):
        return parts["temporal"](tokens, step.positions, step.cos, step.sin, caches, condition)

    lm.forward_temporal = forward_temporal
    streamer.depformer_sample = parts["depformer"]
    codec_streamer.encode = parts["codec_encode"]
    codec_streamer.decode = parts["codec_decode"]
    return parts


def apply(duplex, value: bool) -> None:
    if duplex.device.type != "cuda":
        raise FlagError(f"cuda-graphs needs a CUDA device (got device={str(duplex.device)!r})")
    mode = getattr(duplex, "warmup_stats", {}).get("compile_mode")
    if mode in ("reduce-overhead", "max-autotune"):
        raise FlagError(f"cuda-graphs cannot combine with compile={mode} (it captures CUDA graphs itself)")
    from .compile import warm_up

    parts = graph_parts(duplex)
    duplex.cuda_graphs = parts
    steps = max(WARMUP_STEPS, duplex.max_delay + 3)
    t0 = time.perf_counter()
    try:
        warm_up(duplex, steps)
    except RuntimeError as exc:  # a host sync or an unsupported op inside a captured part
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FlagError(f"cuda-graphs: capture failed ({first})") from None
    missing = [name for name, p in parts.items() if p.captured == 0]
    if missing:
        raise FlagError(f"cuda-graphs: no graph captured for {', '.join(missing)} during the warm-up")
    stats = getattr(duplex, "warmup_stats", {})
    stats.update(
        {
            "cuda_graphs_s": time.perf_counter() - t0,
            "cuda_graph_capture_s": sum(p.capture_s for p in parts.values()),
        }
    )
    duplex.warmup_stats = stats
    torch.cuda.synchronize(duplex.device)

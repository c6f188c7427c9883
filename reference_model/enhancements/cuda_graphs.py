"""``cuda-graphs`` (seed doc 5.3): replay the streaming step's hot parts from CUDA graphs (as moshi does,
moshi/utils/compile.py ``CUDAGraphed``).

Captured after one eager warm-up call each, with static input/output buffers: the temporal transformer
step, the whole depth stage WITH its sampling (8 codebook steps, the default CUDA generator registered
with the graph), and the codec's streaming encode and decode. The temporal step is captured in its
static-shape form (attention over the whole cache capacity, per item: with ``attn=flash`` through
``flash_attn_with_kvcache`` and per-item sequence lengths, otherwise a mask; cache writes by scatter),
so one graph serves every position and every mix of reset streams. The eager step attends over the
filled span only: the same result, more work per frame early on (the report says so).

A :class:`GraphedCallable` runs its function eagerly for ``warmup`` calls per input signature, then
captures one call into a CUDA graph with STATIC copies of its tensor arguments, and from then on copies
each call's tensors into those buffers and replays. What the function must respect (the LM and codec
streamers here do): streaming state is updated IN PLACE in tensors allocated before the capture (a
Python attribute re-bound during the capture would only be re-bound once), no host sync (``.item()``,
``.tolist()``, ``bool(tensor)``) inside, and outputs are read before the next call (they are the graph's
static output buffers, overwritten by the next replay: clone what you keep).

Random draws inside a graph use the default CUDA generator, which PyTorch registers with the graph: each
replay advances its Philox offset, so sampling differs per frame and follows ``torch.manual_seed``.

Capture happens in ``apply`` (a short warm-up on silence, then every stream reset and the RNG state
restored), so a part that cannot be captured fails at build time as a FlagError, except running out of
GPU memory, which passes through (a throughput search records it as "out of memory at batch n").

Order: last of all flags (it captures what ``compile`` and the other transforms made). Conflicts:
``speculative`` and ``mod`` sync with the host inside the step; compile modes that capture graphs
themselves are refused by ``compile``.

UNVERIFIED here: written on a machine without a GPU; the CPU tests cover the refusal and the argument
plumbing, ``scripts/gpu_check.py`` the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..report import CudaGraphsReport
from . import FlagError, FlagSpec, register

register(
    FlagSpec(
        name="cuda-graphs",
        module=__name__.rsplit(".", 1)[1],
        stage="runtime",
        summary="CUDA graphs for the temporal step, depformer loop with sampling, codec encode/decode",
        requires_cuda=True,
        conflicts=frozenset({"speculative", "mod"}),
        order=90,
    )
)

WARMUP_STEPS = 5  # eager warm-up (1), capture (1), replays: all within the first max_delay + 3 frames


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    static_args: tuple
    output: Any


def signature(args: tuple) -> tuple:
    """What a captured graph depends on: tensor shapes/dtypes/devices; other arguments by value (small
    scalars, None) or by identity (caches, lists: the same object must come back)."""
    key = []
    for a in args:
        if isinstance(a, torch.Tensor):
            key.append(("t", tuple(a.shape), a.dtype, a.device))
        elif a is None or isinstance(a, bool | int | float | str):
            key.append(("v", a))
        else:
            key.append(("id", id(a)))
    return tuple(key)


def copy_into(static_args: tuple, args: tuple) -> None:
    for s, a in zip(static_args, args):
        if isinstance(s, torch.Tensor):
            s.copy_(a)


class GraphedCallable:
    """``fn(*args)`` (positional arguments only) replayed from a CUDA graph after ``warmup`` eager calls."""

    def __init__(self, fn: Callable[..., Any], *, warmup: int = 1, name: str = "") -> None:
        self.fn = fn
        self.warmup = warmup
        self.name = name or getattr(fn, "__name__", "graphed")
        self._calls: dict[tuple, int] = {}
        self._graphs: dict[tuple, _Captured] = {}
        self.capture_s = 0.0  # wall time spent capturing (all signatures)
        self.replays = 0

    @property
    def captured(self) -> int:
        return len(self._graphs)

    def __call__(self, *args: Any) -> Any:
        if torch.cuda.is_current_stream_capturing():
            return self.fn(*args)  # inside someone else's capture: be part of it
        key = signature(args)
        cap = self._graphs.get(key)
        if cap is not None:
            copy_into(cap.static_args, args)
            cap.graph.replay()
            self.replays += 1
            return cap.output
        n = self._calls.get(key, 0)
        if n < self.warmup:
            self._calls[key] = n + 1
            return self.fn(*args)
        return self._capture(key, args)

    def _capture(self, key: tuple, args: tuple) -> Any:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        static_args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.fn(*static_args)
        # Capturing records the kernels without running them: replay once to compute this call.
        graph.replay()
        torch.cuda.synchronize()
        self.capture_s += time.perf_counter() - t0
        self._graphs[key] = _Captured(graph, static_args, output)
        return output


def graph_parts(duplex) -> dict[str, GraphedCallable]:
    """Wrap the four hot stages of ``duplex`` in GraphedCallables; returns them by part name."""
    from ..lm import StepPositions

    lm, streamer = duplex.lm, duplex.streamer
    capacity = lm.context
    temporal = streamer.temporal_step

    def temporal_static(tokens, positions, cos, sin, caches, condition):
        # common=None, span=capacity: no host-side position enters the graph, shapes never change
        step = StepPositions(positions, common=None, span=capacity, cos=cos, sin=sin)
        return temporal(tokens, step, caches, condition)

    parts = {
        "temporal": GraphedCallable(temporal_static, name="temporal"),
        "depformer": GraphedCallable(streamer.depformer_sample, name="depformer"),
        "codec_encode": GraphedCallable(duplex.codec_encode, name="codec_encode"),
        "codec_decode": GraphedCallable(duplex.codec_decode, name="codec_decode"),
    }

    def temporal_step(tokens, step, caches, condition=None):
        return parts["temporal"](tokens, step.positions, step.cos, step.sin, caches, condition)

    streamer.temporal_step = temporal_step
    streamer.depformer_sample = parts["depformer"]
    duplex.codec_encode = parts["codec_encode"]
    duplex.codec_decode = parts["codec_decode"]
    return parts


def apply(duplex, value: bool) -> CudaGraphsReport:
    if duplex.device.type != "cuda":
        raise FlagError(f"cuda-graphs needs a CUDA device (got device={str(duplex.device)!r})")
    parts = graph_parts(duplex)
    steps = max(WARMUP_STEPS, duplex.max_delay + 3)
    try:
        seconds = duplex.warm_up(steps)
    except torch.cuda.OutOfMemoryError:
        raise  # a measurement, not a usage error: the caller records "out of memory at this batch"
    except RuntimeError as exc:  # a host sync or an unsupported op inside a captured part
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FlagError(f"cuda-graphs: capture failed ({first})") from None
    missing = [name for name, p in parts.items() if p.captured == 0]
    if missing:
        raise FlagError(f"cuda-graphs: no graph captured for {', '.join(missing)} during the warm-up")
    torch.cuda.synchronize(duplex.device)
    return CudaGraphsReport(warmup_s=seconds, graphs=parts)

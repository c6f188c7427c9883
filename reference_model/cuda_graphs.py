"""CUDA-graph capture of a streaming callable, as moshi does (moshi/utils/compile.py, ``CUDAGraphed``).

A :class:`GraphedCallable` runs its function eagerly for ``warmup`` calls per input signature, then
captures one call into a CUDA graph with STATIC copies of its tensor arguments, and from then on copies
each call's tensors into those buffers and replays. What the function must respect (the LM and codec
streamers here do): streaming state is updated IN PLACE in tensors allocated before the capture (a
Python attribute re-bound during the capture would only be re-bound once), no host sync (``.item()``,
``.tolist()``, ``bool(tensor)``) inside, and outputs are read before the next call (they are the graph's
static output buffers, overwritten by the next replay).

Random draws inside a graph use the default CUDA generator, which PyTorch registers with the graph: each
replay advances its Philox offset, so sampling differs per frame and follows ``torch.manual_seed``.

UNVERIFIED here: written on a machine without a GPU; only the CPU rejection and the argument plumbing
are tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


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

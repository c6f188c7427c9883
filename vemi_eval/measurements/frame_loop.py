"""The timed full-duplex loop the systems kinds share (latency, memory, throughput): one frame at a time,
encode -> LM step -> decode, each stage timed with the device synchronised on both sides. A library of
the kinds: it registers none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from .. import timing


def run_frames(
    model: Any,
    frames: torch.Tensor,
    *,
    stop: Callable[[int, float], bool] | None = None,
    pace_ms: float | None = None,
    first_index: int = 0,
) -> list[dict[str, Any]]:
    """Run the duplex loop over ``frames`` [N, B, 1, frame_size]; one timing row per frame (``frame`` counts
    from ``first_index``: a block of a longer stream).

    ``stop(done, elapsed_s)`` is asked after every frame. ``pace_ms`` sleeps to a live cadence (a frame
    never starts before its audio would have arrived). ``decode_ms`` is None while the LM has no output yet
    (its first ``max_delay`` steps).
    """
    sync = timing.sync_for(model)
    rows: list[dict[str, Any]] = []
    start_ns = timing.clock_ns()
    with torch.inference_mode():
        for i in range(frames.shape[0]):
            if pace_ms is not None:
                lag_s = (start_ns + i * pace_ms * timing.NS_PER_MS - timing.clock_ns()) / 1e9
                if lag_s > 0:
                    time.sleep(lag_s)
            pcm = frames[i]  # fp32 PCM: the model casts it to its codec's dtype
            sync()
            t0 = timing.clock_ns()
            codes = model.encode_user(pcm)
            sync()
            t1 = timing.clock_ns()
            tokens = model.lm_step(codes)
            sync()
            t2 = timing.clock_ns()
            if tokens is not None:
                model.decode_model(tokens)
                sync()
            t3 = timing.clock_ns()
            ms = timing.NS_PER_MS
            rows.append(
                {
                    "frame": first_index + i,
                    "encode_ms": (t1 - t0) / ms,
                    "lm_ms": (t2 - t1) / ms,
                    "decode_ms": (t3 - t2) / ms if tokens is not None else None,
                    "total_ms": (t3 - t0) / ms,
                }
            )
            if stop is not None and stop(i + 1, (t3 - start_ns) / 1e9):
                break
    return rows


def frame_budget_ms(model: Any, params: dict[str, Any]) -> float:
    return float(params["budget_ms"]) if params.get("budget_ms") else 1000.0 / float(model.frame_rate)

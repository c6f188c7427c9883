"""``serving``: many live conversations on one batched model, at several Poisson arrival rates.

The variant's scheduling policy is static batching unless it carries the ``continuous-batching`` flag
(a serving policy, read from the model's report). The clock of the simulation is the measured wall time
of every batched step (:mod:`vemi_eval.serving_sim`), so the figures belong to the device the suite ran on.

Metrics per arrival rate (condition ``{"arrival_rate": r}``): stream-frame throughput, frame latency
p50/p99 (model frame out minus user frame complete), time to first frame p50/p99 (queueing included),
goodput (share of frames within the 80 ms deadline), slot utilisation, and the measured step time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..records import INVALID, OK, MetricRecord
from . import MeasureContext, at_least, measurement, merged_params

# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "frame_latency": [("frame_latency_p50", {})],
    "first_audio_latency": [("ttff_p50", {}), ("first_audio*", {})],
    "throughput": [("throughput", {}), ("goodput", {})],
}


# values a run cannot use, refused by the suite loader before any work
def check(p: dict[str, Any]) -> None:
    if not p["arrival_rates"] or not all(isinstance(r, (int, float)) and r > 0 for r in p["arrival_rates"]):
        raise ValueError(f"arrival_rates must be positive conversations/s, got {p['arrival_rates']!r}")
    for key in ("capacity", "conversations", "median_frames", "min_frames", "max_frames"):
        at_least(p, key, 1)
    at_least(p, "deadline_ms", 1e-9)


PARAMS: dict[str, Any] = {
    "arrival_rates": [0.5, 1.0, 2.0],  # conversations per second
    "capacity": 4,  # slots = batch size of the served model
    "conversations": 40,
    "median_frames": 40,  # 3.2 s at 12.5 Hz
    "min_frames": 12,
    "max_frames": 100,
    "static_timeout_s": 1.0,
    "deadline_ms": 80.0,
    "min_frames_valid": 500,  # fewer stream-frames than this: records are INVALID (too short a run)
}


@measurement("serving", params=PARAMS, version=1, claims=CLAIMS, check=check)
def measure_serving(ctx: MeasureContext) -> Iterable[MetricRecord]:
    from reference_model.report import ServingPolicyReport

    from ..serving_sim import make_policy, poisson_workload, serve

    p = merged_params(ctx, PARAMS)
    rates = [float(r) for r in p["arrival_rates"]]
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"serving: arrival_rates must be positive conversations/s, got {p['arrival_rates']}")
    capacity = int(p["capacity"])
    duplex = ctx.variant.build(batch_size=capacity)
    chosen = duplex.report().get(ServingPolicyReport)
    policy = make_policy(
        chosen.policy if chosen is not None else "static", static_timeout_s=float(p["static_timeout_s"])
    )
    deadline_s = float(p["deadline_ms"]) / 1000.0
    records: list[MetricRecord] = []
    for rate in rates:
        convs = poisson_workload(
            int(p["conversations"]),
            rate,
            median_frames=int(p["median_frames"]),
            min_frames=int(p["min_frames"]),
            max_frames=int(p["max_frames"]),
            seed=ctx.seed,
        )
        ctx.progress(f"serving {ctx.variant.name} ({policy.name}): {len(convs)} conversations at {rate}/s")
        result = serve(duplex, convs, policy, deadline_s=deadline_s, progress=ctx.progress)
        records += _records(ctx, result, rate, int(p["min_frames_valid"]))
        ctx.add_samples(
            {
                "arrival_rate": rate,
                "policy": result.policy,
                "conversation": f.conversation,
                "frame": f.index,
                "slot": f.slot,
                "ready_s": round(f.ready_s, 6),
                "start_s": round(f.start_s, 6),
                "done_s": round(f.done_s, 6),
                "latency_ms": round(f.latency_s * 1000, 3),
            }
            for f in result.frames
        )
    return records


def _records(ctx: MeasureContext, result, rate: float, min_frames: int) -> list[MetricRecord]:
    s = result.summary()
    lat_ms = np.array([f.latency_s for f in result.frames]) * 1000
    first = {f.conversation: f for f in result.frames if f.index == 0}
    ttff_ms = np.array([(first[c.id].done_s - first[c.id].ready_s) * 1000 for c in result.conversations])
    on_time = (lat_ms <= result.deadline_s * 1000 + 1e-9).astype(float)
    live = np.array([st.live / result.capacity for st in result.steps])
    wall_ms = np.array([st.wall_s for st in result.steps]) * 1000
    n_frames = len(result.frames)
    status, reason = OK, ""
    if n_frames < min_frames:
        status, reason = INVALID, f"only {n_frames} stream-frames served (< {min_frames})"
    cond = {"arrival_rate": rate}

    def rec(metric, value, unit, n, higher, samples=None, statistic=None, ci=None):
        extra = {"frames": n_frames, "duration_s": s["span_s"], "policy": result.policy}
        kept = [round(float(x), 4) for x in samples] if samples is not None else None
        lo, hi = ci if ci is not None else (None, None)
        return MetricRecord(
            ctx.suite,
            ctx.variant.name,
            metric,
            float(value),
            unit,
            n,
            lo,
            hi,
            status,
            reason,
            dict(cond),
            higher,
            kind="serving",
            samples=kept,
            statistic=statistic if samples is not None else None,
            extra=extra,
        )

    def ci(samples, statistic):
        from ..stats import bootstrap_ci

        return bootstrap_ci(samples, statistic, seed=ctx.seed)

    return [
        rec("throughput", s["throughput_fps"], "frames/s", n_frames, True),
        rec(
            "frame_latency_p50",
            np.percentile(lat_ms, 50),
            "ms",
            n_frames,
            False,
            lat_ms,
            "p50",
            ci(lat_ms, "p50"),
        ),
        rec(
            "frame_latency_p99",
            np.percentile(lat_ms, 99),
            "ms",
            n_frames,
            False,
            lat_ms,
            "p99",
            ci(lat_ms, "p99"),
        ),
        rec(
            "ttff_p50",
            np.percentile(ttff_ms, 50),
            "ms",
            len(ttff_ms),
            False,
            ttff_ms,
            "p50",
            ci(ttff_ms, "p50"),
        ),
        rec(
            "ttff_p99",
            np.percentile(ttff_ms, 99),
            "ms",
            len(ttff_ms),
            False,
            ttff_ms,
            "p99",
            ci(ttff_ms, "p99"),
        ),
        rec("goodput", on_time.mean(), "share", n_frames, True, on_time, "mean", ci(on_time, "mean")),
        rec("slot_utilisation", live.mean(), "share", len(live), True, live, "mean", ci(live, "mean")),
        rec(
            "step_time_p50", np.median(wall_ms), "ms", len(wall_ms), False, wall_ms, "p50", ci(wall_ms, "p50")
        ),
    ]

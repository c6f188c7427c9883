"""Latency of the full-duplex loop as it runs live: one 80 ms frame at a time, encode -> LM step -> decode.

Single-stream scenario in MLPerf LoadGen's sense: frames are run until BOTH ``min_frames`` and
``min_duration_s`` are reached (or ``max_frames``); a run that ends short of either is reported, but every
record is marked ``invalid`` with the reason. The first frame (lazy compilation, CUDA-graph capture) and the
warm-up frames are reported apart and never enter the steady-state statistics.

Each stage is timed with the device synchronised on both sides (``DuplexModel.sync``), so the figures are
what a live caller waits for. Per stage and in total: p50/p90/p99 with bootstrap intervals, max, jitter,
the share of frames over the frame budget (80 ms), the real-time factor, and an end-to-end figure: the
algorithmic latency (one frame of input buffering plus ``max_delay`` frames of acoustic delay plus the codec
decoder's own delay, ``codec.decode_delay``: 30 ms for the iSTFT decoder) added to the compute latency.

Parameters (suite table ``[latency]``; a ``quick`` sub-table overrides them under ``--quick``):
frames, warmup_frames, min_frames, min_duration_s, max_frames, batch_size, input ("corpus" | "synthetic"),
pace (sleep to the live 80 ms cadence), n_boot, position_buckets, interleave.

``interleave = K`` (K > 0) measures a variant side by side with a fresh build of the baseline, in blocks of K
frames in ABBA order (variant, baseline, baseline, variant, ...), each model carrying its own stream on. The
variant's ratio to the baseline is then taken against these interleaved baseline frames (``paired_baseline``
in each record's extra) instead of the baseline's own run earlier: a machine that slows down or speeds up
during a long run (load, thermal state) moves both sides alike, and the A/A control shows it. The
baseline's own records are measured alone as before.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from .. import timing
from ..data.speech_input import input_pcm, stream_frames
from ..records import MetricRecord
from . import MeasureContext, at_least, measurement, merged_params, one_of
from .common import RecordMaker
from .frame_loop import frame_budget_ms, run_frames

STAGES = ("encode", "lm", "decode", "total")

PARAMS: dict[str, Any] = {
    "frames": 250,  # 20 s of conversation
    "warmup_frames": 5,
    "min_frames": 200,
    "min_duration_s": 10.0,
    "max_frames": 3000,
    "batch_size": 1,
    "input": "corpus",
    "pace": False,
    "n_boot": 1000,
    "position_buckets": 5,
    "budget_ms": None,  # None: one frame (1000 / frame_rate)
    "interleave": 0,  # frames per block measured side by side with the baseline (0: the variant alone)
}


# --- input signal ---------------------------------------------------------------------------------------


# --- the timed loop -------------------------------------------------------------------------------------


# --- records --------------------------------------------------------------------------------------------


def validity_reasons(n_frames: int, duration_s: float, min_frames: int, min_duration_s: float) -> list[str]:
    """LoadGen-style rules: enough frames AND enough measured time, or the run is invalid."""
    reasons = []
    if n_frames < min_frames:
        reasons.append(f"{n_frames} measured frames < min_frames {min_frames}")
    if duration_s < min_duration_s:
        reasons.append(f"measured {duration_s:.2f} s < min_duration_s {min_duration_s:g}")
    return reasons


def latency_records(
    make: RecordMaker,
    rows: list[dict[str, Any]],
    *,
    budget_ms: float,
    algorithmic_ms: float,
    frame_s: float,
    position_buckets: int,
) -> None:
    """Steady-state statistics of the measured rows (first frame and warm-up already removed)."""
    col = {s: [r[f"{s}_ms"] for r in rows if r[f"{s}_ms"] is not None] for s in STAGES}
    for stage in STAGES:
        if not col[stage]:
            continue
        cond = {"stage": stage}
        for stat in ("p50", "p90", "p99"):
            make.stat(f"frame_time_{stat}_ms", col[stage], stat, "ms", condition=cond)
        make.plain("frame_time_max_ms", max(col[stage]), "ms", len(col[stage]), condition=cond)
    total = np.asarray(col["total"])
    make.stat("jitter_std_ms", total, "std", "ms")
    p99_minus_p50 = float(np.percentile(total, 99) - np.percentile(total, 50))
    make.plain("jitter_p99_minus_p50_ms", p99_minus_p50, "ms", total.size)
    misses = (total > budget_ms).astype(np.float64)
    make.stat("deadline_miss_share", misses, "mean", "fraction")
    make.stat("real_time_factor", total, "mean", "x", scale=1.0 / budget_ms)
    make.plain("algorithmic_latency_ms", algorithmic_ms, "ms", 1)
    for stat in ("p50", "p99"):
        make.stat(f"end_to_end_{stat}_ms", total, stat, "ms", shift=algorithmic_ms)
    # Attention over a growing history: how the frame time moves along the conversation. The condition
    # is the bucket's rank, not its start time: that depends on how many frames ran, and two runs of the
    # same code must compare bucket with bucket (the start time is kept in extra).
    if position_buckets > 1 and total.size >= 10 * position_buckets:
        for i, chunk in enumerate(np.array_split(np.arange(total.size), position_buckets)):
            rec = make.stat(
                "frame_time_by_position_p50_ms",
                total[chunk],
                "p50",
                "ms",
                condition={"stage": "total", "position_bucket": i + 1},
            )
            rec.extra["position_s"] = round(rows[chunk[0]]["frame"] * frame_s, 3)


# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "lm_step_time": [("frame_time_p50_ms", {"stage": "lm"}), ("lm_step*", {})],
    "frame_latency": [("frame_time_p50_ms", {"stage": "total"}), ("end_to_end_p50_ms", {})],
    "attention_time": [("frame_time_p50_ms", {"stage": "attention"})],
    "latency_jitter": [("jitter_std_ms", {}), ("jitter_p99_minus_p50_ms", {})],
}


# values a run cannot use, refused by the suite loader before any work
def check(p: dict[str, Any]) -> None:
    for key, low in (("frames", 1), ("warmup_frames", 0), ("max_frames", 1), ("batch_size", 1)):
        at_least(p, key, low)
    for key, low in (("n_boot", 1), ("position_buckets", 0), ("min_frames", 0), ("min_duration_s", 0)):
        at_least(p, key, low)
    one_of(p, "input", ("corpus", "synthetic"))
    if p["budget_ms"] is not None:
        at_least(p, "budget_ms", 1e-9)
    at_least(p, "interleave", 0)
    if p["interleave"] and p["pace"]:
        raise ValueError("interleave and pace cannot be combined: a paced stream waits for live audio")


def run_interleaved(
    variant: Any,
    baseline: Any,
    frames: torch.Tensor,
    *,
    warmup: int,
    block: int,
    target: int,
    min_duration_s: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float, int]:
    """The variant and the baseline over the same stream, side by side: first frame and warm-up of each,
    then blocks of ``block`` frames in ABBA order (V B, B V, V B, ...) so that a drift of the machine
    during the run falls on both alike. Each model carries its own streaming state from block to block.
    Runs pairs of blocks until the variant has ``target`` measured frames and ``min_duration_s`` of
    measured time (or the frames run out). Returns both sets of rows, the variant's measured seconds and
    the number of pairs."""
    head = 1 + warmup
    rows_v = run_frames(variant, frames[:head])
    rows_b = run_frames(baseline, frames[:head])
    pos, measured_s, pairs = head, 0.0, 0
    while pos < frames.shape[0]:
        chunk = frames[pos : pos + block]
        for model in (variant, baseline) if pairs % 2 == 0 else (baseline, variant):
            t0 = timing.clock_ns()
            rows = run_frames(model, chunk, first_index=pos)
            if model is variant:
                rows_v += rows
                measured_s += (timing.clock_ns() - t0) / 1e9
            else:
                rows_b += rows
        pos += chunk.shape[0]
        pairs += 1
        if pos - head >= target and measured_s >= min_duration_s:
            break
    return rows_v, rows_b, measured_s, pairs


def algorithmic_latency_ms(model: Any) -> float:
    """One frame of input buffering, then ``max_delay`` frames until the delayed acoustic codebooks exist,
    then the samples the codec's streaming decoder holds back (an iSTFT decoder's n_fft - hop; SEANet's 0)."""
    decode_delay_ms = 1000.0 * int(getattr(model.codec, "decode_delay", 0)) / float(model.sample_rate)
    return 1000.0 / float(model.frame_rate) * (1 + int(model.max_delay)) + decode_delay_ms


def _timed_build(variant: Any, batch_size: int) -> tuple[Any, float]:
    start = timing.clock_ns()
    model = variant.build(batch_size=batch_size, fresh=True)  # owned by the caller
    return model, (timing.clock_ns() - start) / 1e9


def _label_rows(
    rows: list[dict[str, Any]], warmup: int, frame_s: float, budget_ms: float, batch: int
) -> None:
    for r in rows:
        r["position_s"] = round(r["frame"] * frame_s, 3)
        r["phase"] = "first" if r["frame"] == 0 else ("warmup" if r["frame"] <= warmup else "measured")
        r["over_budget"] = int(r["total_ms"] > budget_ms)
        r["batch_size"] = batch


def _make_records(
    ctx: MeasureContext,
    params: dict[str, Any],
    rows: list[dict[str, Any]],
    *,
    build_s: float,
    warmup_stats: dict[str, Any],
    budget_ms: float,
    algorithmic_ms: float,
    frame_s: float,
) -> RecordMaker:
    measured = [r for r in rows if r["phase"] == "measured"]
    make = RecordMaker(ctx, int(params["n_boot"]))
    make.plain("build_s", build_s, "s", 1)
    for key, value in sorted(warmup_stats.items()):
        if isinstance(value, (int, float)):
            make.plain(key, float(value), "s" if key.endswith("_s") else "", 1)
    make.plain("first_frame_ms", rows[0]["total_ms"], "ms", 1, extra={"note": "compilation / graph capture"})
    warm = [r["total_ms"] for r in rows if r["phase"] == "warmup"]
    if warm:
        make.plain("warmup_ms", float(np.sum(warm)), "ms", len(warm))
    if measured:
        latency_records(
            make,
            measured,
            budget_ms=budget_ms,
            algorithmic_ms=algorithmic_ms,
            frame_s=frame_s,
            position_buckets=int(params["position_buckets"]),
        )
    return make


def attach_paired_baseline(
    records: list[MetricRecord], baseline_records: list[MetricRecord], baseline: str, order: str
) -> None:
    """Give each record its interleaved baseline twin (same metric and condition) in extra: the runner
    takes the ratio to the baseline, and its interval, against it."""
    twins = {(b.metric, json.dumps(b.condition, sort_keys=True)): b for b in baseline_records}
    for rec in records:
        b = twins.get((rec.metric, json.dumps(rec.condition, sort_keys=True)))
        if b is None or b.value is None:
            continue
        rec.extra["paired_baseline"] = {
            "variant": baseline,
            "value": b.value,
            "ci": [b.ci_low, b.ci_high],
            "samples": b.samples,
            "statistic": b.statistic,
            "order": order,
        }


@measurement("latency", params=PARAMS, version=1, claims=CLAIMS, check=check)
def measure_latency(ctx: MeasureContext) -> list[MetricRecord]:
    params = merged_params(ctx, PARAMS)
    batch_size = int(params["batch_size"])
    block = int(params["interleave"])
    paired = block > 0 and not ctx.variant.is_baseline
    model, build_s = _timed_build(ctx.variant, batch_size)
    budget_ms = frame_budget_ms(model, params)
    frame_s = 1.0 / float(model.frame_rate)
    max_delay = int(model.max_delay)
    algorithmic_ms = algorithmic_latency_ms(model)
    warmup = max(int(params["warmup_frames"]), max_delay)  # decode runs from max_delay on
    target = int(params["frames"])
    max_frames = max(int(params["max_frames"]), target)
    min_duration_s = float(params["min_duration_s"])

    total_frames = 1 + warmup + max_frames
    n_samples = total_frames * model.frame_size
    pcm, input_info, input_data = input_pcm(params["input"], n_samples, model.sample_rate, ctx.seed)
    frames = stream_frames(pcm, batch_size, model.frame_size, total_frames, getattr(model, "device", "cpu"))
    ctx.progress(f"latency: {ctx.variant.name}, up to {max_frames} frames at batch {batch_size}")

    base_rows: list[dict[str, Any]] = []
    if paired:
        base_model, base_build_s = _timed_build(ctx.baseline, batch_size)
        rows, base_rows, measured_s, pairs = run_interleaved(
            model,
            base_model,
            frames,
            warmup=warmup,
            block=block,
            target=target,
            min_duration_s=min_duration_s,
        )
        base_warmup_stats = base_model.report().build_stats()
        # the baseline's own codec and delays, not the variant's
        base_algorithmic_ms = algorithmic_latency_ms(base_model)
        del base_model
    else:
        measured_start_ns: list[int] = []

        def stop(done: int, elapsed_s: float) -> bool:
            if done == 1 + warmup:
                measured_start_ns.append(timing.clock_ns())
            if done <= 1 + warmup:
                return False
            measured = done - 1 - warmup
            measured_s = (timing.clock_ns() - measured_start_ns[0]) / 1e9
            return measured >= target and measured_s >= min_duration_s

        pace_ms = budget_ms if params["pace"] else None
        rows = run_frames(model, frames, stop=stop, pace_ms=pace_ms)
        measured_s = (timing.clock_ns() - measured_start_ns[0]) / 1e9 if measured_start_ns else 0.0
    # compile / CUDA-graph capture happen while the variant is built: reported apart from steady state.
    warmup_stats = model.report().build_stats()
    del model, frames

    _label_rows(rows, warmup, frame_s, budget_ms, batch_size)
    ctx.add_samples(rows)
    shared = {"budget_ms": budget_ms, "frame_s": frame_s}
    make = _make_records(
        ctx, params, rows, build_s=build_s, warmup_stats=warmup_stats, algorithmic_ms=algorithmic_ms, **shared
    )
    measured = [r for r in rows if r["phase"] == "measured"]
    reasons = validity_reasons(len(measured), measured_s, int(params["min_frames"]), min_duration_s)
    order: dict[str, Any] = {"order": "alone"}
    if paired:
        _label_rows(base_rows, warmup, frame_s, budget_ms, batch_size)
        base = _make_records(
            ctx,
            params,
            base_rows,
            build_s=base_build_s,
            warmup_stats=base_warmup_stats,
            algorithmic_ms=base_algorithmic_ms,
            **shared,
        )
        what = f"ABBA with {ctx.baseline.name}, {block}-frame blocks, {pairs} pairs"
        attach_paired_baseline(make.records, base.records, ctx.baseline.name, what)
        order = {"order": what}
    for rec in make.records:
        rec.budget_ms = budget_ms
        rec.data = dict(input_data)
        rec.extra.update({"batch_size": batch_size, **input_info, **order})
        rec.extra.update({"frames": len(measured), "duration_s": round(measured_s, 3)})
    make.invalidate(reasons)
    return make.records

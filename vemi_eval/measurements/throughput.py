"""Throughput: how many concurrent conversations one model instance keeps inside the real-time budget.

Every conversation must get its 80 ms frame in under 80 ms, so the service level is on the frame time of
the whole batch (one full-duplex step for all streams). Like vLLM bench's SLA search: the batch size is
doubled until the SLA breaks (p99 frame time over the budget, or out of memory), then bisected between the
last batch that held and the first that broke. Every probed batch size gives records with condition
``{"batch_size": n}``: frame time p50/p99, frames per second (streams x frames / s), cost per stream-frame
(ms of compute per conversation per frame), and the share of frames inside the budget (goodput).

Parameters (suite table ``[throughput]``, ``quick`` sub-table under --quick): frames, warmup_frames,
max_batch, batch_sizes (extra sizes always measured), sla_percentile, budget_ms, input, n_boot.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..data.speech_input import input_pcm, stream_frames
from ..records import FAILED, MetricRecord
from ..stats import summarize
from . import MeasureContext, at_least, ints_at_least, measurement, merged_params, one_of
from .common import RecordMaker
from .frame_loop import frame_budget_ms, run_frames

PARAMS: dict[str, Any] = {
    "frames": 40,
    "warmup_frames": 3,
    "max_batch": 64,
    "batch_sizes": [],
    "sla_percentile": 99.0,
    "budget_ms": None,
    "input": "corpus",
    "n_boot": 1000,
}


def find_max_streams(meets_sla: Callable[[int], bool], max_batch: int) -> tuple[int, list[int]]:
    """Largest n in [1, max_batch] with ``meets_sla(n)``: doubling, then bisection. (best, probed sizes).

    Assumes the frame time grows with the batch (as it does); each size is probed at most once. 0 when
    even one stream misses the SLA.
    """
    probed: dict[int, bool] = {}

    def ok(n: int) -> bool:
        if n not in probed:
            probed[n] = bool(meets_sla(n))
        return probed[n]

    good, bad = 0, None
    n = 1
    while n <= max_batch:
        if not ok(n):
            bad = n
            break
        good = n
        n *= 2
    if bad is None:
        if good == max_batch or ok(max_batch):
            return max_batch, list(probed)
        bad = max_batch
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good, list(probed)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or "out of memory" in str(exc).lower()


# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "throughput": [("frames_per_second", {}), ("max_realtime_streams", {})],
}


# values a run cannot use, refused by the suite loader before any work
def check(p: dict[str, Any]) -> None:
    for key, low in (("frames", 1), ("warmup_frames", 0), ("max_batch", 1), ("n_boot", 1)):
        at_least(p, key, low)
    ints_at_least(p, "batch_sizes", 1, allow_empty=True)
    at_least(p, "sla_percentile", 1e-9)
    one_of(p, "input", ("corpus", "synthetic"))


@measurement("throughput", params=PARAMS, version=1, claims=CLAIMS, check=check)
def measure_throughput(ctx: MeasureContext) -> list[MetricRecord]:
    params = merged_params(ctx, PARAMS)
    n_frames, warmup = int(params["frames"]), int(params["warmup_frames"])
    max_batch = int(params["max_batch"])
    percentile = float(params["sla_percentile"])
    stat = f"p{percentile:g}"
    make = RecordMaker(ctx, int(params["n_boot"]))
    results: dict[int, dict[str, Any]] = {}
    pcm_cache: dict[str, Any] = {}

    def probe(n: int) -> dict[str, Any]:
        if n in results:
            return results[n]
        ctx.progress(f"throughput: {ctx.variant.name}, batch {n}")
        model = None
        try:
            model = ctx.variant.build(batch_size=n, fresh=True)  # not kept by the runner
            budget_ms = frame_budget_ms(model, params)
            skip = max(warmup, int(model.max_delay))  # the first frame and warm-up, decode running
            total = 1 + skip + n_frames
            if "pcm" not in pcm_cache:
                need = (total + 37 * max_batch) * model.frame_size
                pcm_cache["pcm"], pcm_cache["info"], pcm_cache["data"] = input_pcm(
                    params["input"], need, model.sample_rate, ctx.seed
                )
            frames = stream_frames(
                pcm_cache["pcm"], n, model.frame_size, total, getattr(model, "device", "cpu")
            )
            rows = run_frames(model, frames)[1 + skip :]
            times = np.array([r["total_ms"] for r in rows])
            res = {"ok": True, "times": times, "budget_ms": budget_ms, "p": summarize(times, stat)}
            res["meets"] = res["p"] <= budget_ms
            ctx.add_samples({**r, "batch_size": n, "phase": "measured"} for r in rows)
        except (RuntimeError, MemoryError) as exc:
            if not _is_oom(exc):
                raise
            res = {"ok": False, "meets": False, "reason": f"out of memory at batch {n}"}
        finally:
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        results[n] = res
        return res

    best, _ = find_max_streams(lambda n: probe(n)["meets"], max_batch)
    for n in params["batch_sizes"]:
        probe(int(n))

    for n in sorted(results):
        res = results[n]
        cond = {"batch_size": n}
        if not res["ok"]:
            for metric, unit in (("frames_per_second", "frames/s"), ("frame_time_p99_ms", "ms")):
                make.records.append(
                    MetricRecord(
                        suite=ctx.suite, variant=ctx.variant.name, metric=metric, value=None, unit=unit,
                        n=0, status=FAILED, reason=res["reason"], condition=cond,
                    )
                )  # fmt: skip
            continue
        t, budget_ms = res["times"], res["budget_ms"]
        make.stat("frame_time_p50_ms", t, "p50", "ms", condition=cond)
        make.stat(f"frame_time_{stat}_ms", t, stat, "ms", condition=cond)
        # stream-frames per second of compute time: n streams x frames / seconds
        make.plain(
            "frames_per_second",
            n * 1000.0 * t.size / float(t.sum()),
            "frames/s",
            t.size,
            higher_is_better=True,
            condition=cond,
            ci=_rate_ci(t, n * 1000.0, ctx.seed, int(params["n_boot"])),
        )
        make.stat("cost_per_stream_frame_ms", t, "mean", "ms", scale=1.0 / n, condition=cond)
        make.stat(
            "goodput_share",
            (t <= budget_ms).astype(np.float64),
            "mean",
            "fraction",
            condition=cond,
            higher_is_better=True,
        )
    budget = next((r["budget_ms"] for r in results.values() if r["ok"]), None)
    extra = {"sla": f"{stat} frame time <= {budget} ms", "probed": sorted(results), "max_batch": max_batch}
    rec = make.plain(
        "max_realtime_streams", best, "streams", len(results), higher_is_better=True, extra=extra
    )
    if best == max_batch:
        rec.reason = f"search capped at max_batch {max_batch}: the true maximum may be higher"
    if best > 0:
        t = results[best]["times"]
        make.plain(
            "realtime_frames_per_second",
            best * 1000.0 * t.size / float(t.sum()),
            "frames/s",
            t.size,
            higher_is_better=True,
            extra={"batch_size": best},
        )
    for r in make.records:
        r.extra.update(pcm_cache.get("info", {}))
        r.data = dict(pcm_cache.get("data", {}))
    return make.records


def _rate_ci(t: np.ndarray, numerator: float, seed: int, n_boot: int) -> tuple[float, float]:
    """Bootstrap interval of ``numerator / mean(t)`` (a rate from frame times)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, t.size, size=(n_boot, t.size))
    dist = numerator / t[idx].mean(axis=1)
    lo, hi = np.quantile(dist, [0.025, 0.975])
    return float(lo), float(hi)

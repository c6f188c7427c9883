"""Time and memory of the LM's attention op alone, as it runs in streaming decode, per KV-cache fill level.

What is timed: ``reference_model.probes.attend``, the function every attention layer calls, with
the variant's own backend (``attn=eager|sdpa|flash``), for EVERY temporal transformer layer, with the
q/k/v shapes that layer has at that fill (its heads, KV heads, head dim, dtype, device). One sample is
one pass over all temporal layers, i.e. the attention time of one LM step; nothing else of the step
(projections, RoPE, cache write, FFN, depth transformer) is inside the timed region. The device is
synchronised on both sides of each sample. Value: the median of ``repeats`` samples with a bootstrap
interval; the raw samples travel in the record's ``samples`` so the runner puts an interval on the ratio.

How the caches are filled: random keys/values appended through the cache's own API (``append``), one
position at a time, into the streamer's temporal caches (else caches made by ``make_cache``), then read
with ``read`` as a decode step would (outside the timed region). Not by running the streamer: the cost of
the attention op depends on shapes, dtype and backend, not on the values attended, and 3000 streaming
steps would cost minutes per variant on a 7B model. Going through the cache API keeps a flag that swaps
the cache class (``kv-compress``) filled and read as it would be in decode.

Two cases per fill level ``n`` (capped by the model's context):

* decode: one new token attending the ``n`` cached positions (its own included), ``{"context": n}``;
* prefill: a block of ``T = prefill_tokens`` new tokens attending causally, the last ``T`` of the ``n``
  positions (a conversation that starts with a long prompt), ``{"context": n, "query_len": T}``; only
  where ``T <= n``. eager and sdpa get the explicit causal mask; flash gets none, since
  ``flash_attn_func(causal=True)`` aligns the causal mask to the bottom right (flash-attn >= 2.1): the
  same function, each in its kernel's own form.

``attention_peak_memory``: bytes the op of ONE layer allocates at its peak (output included) above what
was allocated before it. CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the
call. CPU: the allocation timeline that ``torch.profiler`` records with ``profile_memory=True`` (every
CPU-allocator alloc and free of the op, in time order): the highest running sum. When the profiler saw
less than the op's output tensor, the record is skipped with that reason rather than reported.

A variant with ``attn=flash`` that cannot be built here (no CUDA, no flash-attn, fp32 weights) gives
skipped records with the reason; the other variants are measured.

Parameters: contexts, prefill_tokens (0: no prefill case), repeats, warmup, batch_size, memory, n_boot.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .. import timing
from ..records import SKIPPED, MetricRecord
from . import MeasureContext, at_least, ints_at_least, measurement, merged_params
from .common import RecordMaker

PARAMS: dict[str, Any] = {
    "contexts": [125, 750, 3000],  # cached frames: 10 s, 60 s, 240 s of conversation at 12.5 Hz
    "prefill_tokens": 250,  # 20 s of prompt
    "repeats": 50,
    "warmup": 5,
    "batch_size": 1,
    "memory": True,
    "n_boot": 1000,
}


# --- the op and its inputs --------------------------------------------------------------------------


@dataclass
class LayerCall:
    """One temporal layer's attention op at one fill: its inputs, ready to call."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None
    backend: str

    def __call__(self) -> torch.Tensor:
        from reference_model.probes import attend

        return attend(self.q, self.k, self.v, self.mask, self.backend)


def temporal_attentions(lm: Any) -> list[Any]:
    from reference_model import probes

    attns = probes.temporal_attentions(lm)
    if not attns:
        raise ValueError("the LM's temporal transformer has no attention layers to time")
    return attns


def temporal_caches(model: Any, attns: list[Any], batch_size: int, capacity: int) -> list[Any]:
    """The streamer's own temporal caches (the cache class the flags chose), else fresh ones."""
    from reference_model import probes

    caches = probes.temporal_caches(model) if model.streamer is not None else []
    if caches and len(caches) == len(attns) and caches[0].batch_size == batch_size:
        for c in caches:
            c.reset()
        return list(caches)
    lm = model.lm
    return [a.make_cache(batch_size, capacity, lm.device, lm.dtype) for a in attns]


def fill_caches(
    caches: list[Any], start: int, stop: int, seed: int, device: torch.device, dtype: torch.dtype
) -> None:
    """Append random keys/values (``dtype``: the model's, whatever the cache stores) at positions
    start..stop-1 to every cache, one position at a time."""
    from reference_model.probes import StepPositions

    if stop <= start:
        return
    gen = torch.Generator().manual_seed(seed + start)
    positions = torch.arange(start, stop, device=device, dtype=torch.long)
    for cache in caches:
        shape = (cache.batch_size, cache.num_kv_heads, stop - start, cache.head_dim)
        ks = torch.randn(shape, generator=gen).to(device, dtype)
        vs = torch.randn(shape, generator=gen).to(device, dtype)
        for i in range(stop - start):
            p = start + i
            step = StepPositions(positions[i : i + 1].expand(cache.batch_size), common=p, span=p + 1)
            cache.append(ks[:, :, i : i + 1], vs[:, :, i : i + 1], step)


def read_filled(cache: Any, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values as a decode step at position n - 1 reads them; checks the cache spans exactly n."""
    from reference_model.probes import StepPositions

    pos = torch.full((cache.batch_size,), n - 1, device=device, dtype=torch.long)
    keys, values, mask = cache.read(StepPositions(pos, common=n - 1, span=n))
    if keys.shape[2] != n or mask is not None:
        raise RuntimeError(
            f"{type(cache).__name__}.read gave {keys.shape[2]} slots"
            f" ({'with' if mask is not None else 'no'} mask) for a fill of {n}"
        )
    return keys, values


def layer_calls(
    attns: list[Any], kv: list[tuple[torch.Tensor, torch.Tensor]], query_len: int, seed: int
) -> list[LayerCall]:
    """Random queries for each layer against its cached keys/values; the causal block mask if T > 1."""
    gen = torch.Generator().manual_seed(seed + 7919 * query_len)
    calls = []
    for attn, (keys, values) in zip(attns, kv):
        B, n = keys.shape[0], keys.shape[2]
        q = torch.randn(B, attn.num_heads, query_len, attn.head_dim, generator=gen).to(
            keys.device, keys.dtype
        )
        mask = None
        if query_len > 1 and attn.backend != "flash":  # flash_attn_func(causal=True) masks bottom-right
            # query i sits at position n - T + i and sees keys 0..n - T + i
            mask = torch.ones(query_len, n, dtype=torch.bool, device=keys.device).tril(n - query_len)
        calls.append(LayerCall(q, keys, values, mask, attn.backend))
    return calls


# --- timing and memory ------------------------------------------------------------------------------


def device_sync(model: Any, device: torch.device) -> Callable[[], None]:
    if callable(getattr(model, "sync", None)):
        return model.sync
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return timing.no_sync


def time_pass(calls: list[LayerCall], repeats: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Milliseconds of one pass over every layer's attention op, ``repeats`` times after ``warmup``.

    CUDA: the pass is captured in a CUDA graph and each replay is timed by CUDA events, so the figure is
    the kernels' time, not 32 Python launches and a host sync (eager events where capture fails)."""
    if calls and calls[0].q.is_cuda:
        return _time_pass_cuda(calls, repeats, warmup)
    samples = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            with timing.Stopwatch(sync) as sw:
                for call in calls:
                    call()
            if i >= warmup:
                samples.append(sw.ms)
    return samples


def _time_pass_cuda(calls: list[LayerCall], repeats: int, warmup: int) -> list[float]:
    def one_pass() -> None:
        for call in calls:
            call()

    run = one_pass
    with torch.inference_mode():
        one_pass()  # first call: lazy initialisation outside the capture
        torch.cuda.synchronize()
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                one_pass()
            run = graph.replay
        except RuntimeError:  # an op that cannot be captured: events around the eager pass
            torch.cuda.synchronize()
        samples = []
        for i in range(warmup + repeats):
            with timing.CudaEventTimer() as t:
                run()
            if i >= warmup:
                samples.append(t.ms)
    return samples


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence fd 2 while the profiler starts and stops: kineto prints two trace lines each time."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_bytes_cpu(call: LayerCall) -> tuple[int | None, str]:
    """(peak bytes above the start, "") from the profiler's allocation timeline, or (None, why not)."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with torch.inference_mode(), _quiet_fd2():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = call()
    out_bytes = out.nbytes
    del out
    events = _cpu_memory_events(prof)
    running = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        running += int(e.nbytes())
        peak = max(peak, running)
    if peak < out_bytes:
        return None, (
            f"torch.profiler saw {peak} bytes allocated, less than the op's {out_bytes}-byte output: "
            "its CPU memory timeline is not reliable here"
        )
    return peak, ""


def _cpu_memory_events(prof: Any) -> list[Any]:
    from torch.autograd import DeviceType

    return [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    ]


def peak_bytes_cuda(call: LayerCall, device: torch.device) -> tuple[int | None, str]:
    """Peak bytes above what was allocated before the call (unverified: no GPU on the dev machine)."""
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        out = call()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del out
    return int(peak), ""


# --- the measurement --------------------------------------------------------------------------------


def _flash_unavailable(ctx: MeasureContext, exc: Exception) -> list[MetricRecord]:
    return [
        MetricRecord(
            suite=ctx.suite,
            variant=ctx.variant.name,
            metric=metric,
            value=None,
            unit=unit,
            n=0,
            status=SKIPPED,
            reason=str(exc).splitlines()[0],
        )
        for metric, unit in (("attention_time", "ms"), ("attention_peak_memory", "bytes"))
    ]


def fill_levels(contexts: list[int], model_context: int) -> list[tuple[int, int]]:
    """(fill, requested) per asked context, capped at the model's context; duplicates after capping go."""
    out: dict[int, int] = {}
    for c in contexts:
        if int(c) < 1:
            raise ValueError(f"[attention] contexts must be >= 1, got {c}")
        out.setdefault(min(int(c), int(model_context)), int(c))
    return sorted(out.items())


# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "attention_time": [("attention_time", {}), ("attention*_ms", {})],
    "attention_memory": [("attention_peak_memory", {})],
}


# values a run cannot use, refused by the suite loader before any work
def check(p: dict[str, Any]) -> None:
    ints_at_least(p, "contexts", 1)
    for key, low in (("prefill_tokens", 0), ("repeats", 1), ("warmup", 0), ("batch_size", 1), ("n_boot", 1)):
        at_least(p, key, low)


@measurement("attention", params=PARAMS, version=1, claims=CLAIMS, check=check, clean_heap=True)
def measure_attention(ctx: MeasureContext) -> list[MetricRecord]:
    from reference_model import FlagError

    params = merged_params(ctx, PARAMS)
    batch_size, repeats, warmup = int(params["batch_size"]), int(params["repeats"]), int(params["warmup"])
    prefill = int(params["prefill_tokens"])
    if repeats < 2 or warmup < 0 or prefill < 0 or batch_size < 1:
        raise ValueError("[attention] needs repeats >= 2, warmup >= 0, prefill_tokens >= 0, batch_size >= 1")
    try:
        model = ctx.variant.build(batch_size=batch_size, fresh=True)  # owned here: its caches get written
    except FlagError as exc:
        if str(exc).startswith("attn=flash needs"):  # no CUDA / flash-attn / half weights here
            return _flash_unavailable(ctx, exc)
        raise
    lm = model.lm
    device = torch.device(lm.device)
    attns = temporal_attentions(lm)
    levels = fill_levels(list(params["contexts"]), lm.context)
    caches = temporal_caches(model, attns, batch_size, levels[-1][0])
    sync = device_sync(model, device)
    make = RecordMaker(ctx, int(params["n_boot"]))
    base_extra = {
        "backend": attns[0].backend,
        "layers": len(attns),
        "batch_size": batch_size,
        "num_heads": attns[0].num_heads,
        "num_kv_heads": attns[0].num_kv_heads,
        "head_dim": attns[0].head_dim,
        "dtype": str(lm.dtype).replace("torch.", ""),
        "cache": type(caches[0]).__name__,
        "fill": "random K/V appended through the cache API",
    }

    filled = 0
    for n, requested in levels:
        fill_caches(caches, filled, n, ctx.seed, device, lm.dtype)
        filled = n
        kv = [read_filled(c, n, device) for c in caches]
        cases = [(1, {"context": n})]
        if 1 < prefill <= n:
            cases.append((prefill, {"context": n, "query_len": prefill}))
        for query_len, cond in cases:
            ctx.progress(f"attention: {ctx.variant.name}, context {n}, query_len {query_len}")
            calls = layer_calls(attns, kv, query_len, ctx.seed)
            samples = time_pass(calls, repeats, warmup, sync)
            extra = {**base_extra, "query_len": query_len, "requested_context": requested}
            if device.type == "cuda":
                extra["timing_method"] = "CUDA graph of the pass, replays timed by CUDA events"
            rec = make.stat("attention_time", samples, "median", "ms", condition=cond)
            rec.extra.update(extra, per_layer_ms=round(rec.value / len(attns), 6))
            ctx.add_samples(
                {"metric": "attention_time", **cond, "query_len": query_len, "rep": i, "value": ms}
                for i, ms in enumerate(samples)
            )
            if params["memory"]:
                _memory_record(ctx, make, calls[0], device, cond, extra)
            del calls
        del kv
    if callable(getattr(model, "reset", None)):
        model.reset()  # forget the random history (the model is ours, but leave it sane)
    del model, caches, lm, attns
    gc.collect()
    return make.records


def _memory_record(
    ctx: MeasureContext,
    make: RecordMaker,
    call: LayerCall,
    device: torch.device,
    cond: dict[str, Any],
    extra: dict[str, Any],
) -> None:
    if device.type == "cuda":
        peak, why = peak_bytes_cuda(call, device)
        method = "torch.cuda.max_memory_allocated - memory_allocated before, one layer's op"
    else:
        peak, why = peak_bytes_cpu(call)
        method = "torch.profiler(profile_memory=True): peak running sum of CPU allocations, one layer's op"
    if peak is None:
        make.records.append(
            MetricRecord(
                suite=ctx.suite, variant=ctx.variant.name, metric="attention_peak_memory", value=None,
                unit="bytes", n=0, status=SKIPPED, reason=why, condition=dict(cond),
            )
        )  # fmt: skip
        return
    make.plain("attention_peak_memory", peak, "bytes", 1, condition=cond, extra={**extra, "method": method})

"""Memory of a variant: bytes of weights as stored, KV-cache bytes per stream against context, peak memory.

* Weight bytes count the storage actually held by parameters, buffers and packed state (quantized layers
  keep packed integer weights and scales as buffers; torch.ao packed params appear in ``state_dict``), each
  storage counted once (tied weights) and in full (a view holds its whole storage alive).
* KV-cache bytes per stream are measured by allocating the caches exactly as the streamer does (each
  attention layer's ``make_cache``, so a flag that swaps the cache class, e.g. a compressed cache, is
  measured as it is) and reading their ``nbytes``, at each context length asked; beside it, the analytic
  figure from the config (2 x layers x kv_heads x head_dim x slots x bytes per element + 8 bytes of position
  per slot). The live streamer's own caches are read too.
* Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset before the build); on CPU the process's
  peak RSS (VmHWM, reset through /proc/self/clear_refs before the build; where that is not allowed, RSS
  sampled every 2 ms by a thread). Reported as the rise over the memory held before the build (the
  variant's own footprint: weights, caches, activations); the absolute process peak is kept in extra.

Each variant is built, measured and freed before the next. Parameters: contexts, batch_size, frames.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import psutil
import torch

from ..data.speech_input import stream_frames, synthetic_speech
from ..records import INVALID, SKIPPED, MetricRecord
from . import MeasureContext, at_least, ints_at_least, measurement, merged_params
from .common import RecordMaker
from .frame_loop import run_frames

PARAMS: dict[str, Any] = {
    "contexts": [125, 250, 750, 1500, 3000],  # 10 s ... 240 s of conversation at 12.5 Hz
    "batch_size": 1,
    "frames": 10,
}


# --- weights --------------------------------------------------------------------------------------------


def _tensors(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for x in obj:
            yield from _tensors(x)


def storage_bytes(module: torch.nn.Module) -> int:
    """Bytes of distinct storages behind the module's parameters, buffers and state_dict (packed params)."""
    seen: dict[tuple[str, int], int] = {}
    candidates = list(module.parameters()) + list(module.buffers())
    for value in module.state_dict(keep_vars=True).values():
        candidates.extend(_tensors(value))
    for t in candidates:
        if t.device.type == "meta":
            raise ValueError("weights on the meta device have no storage: the variant was not materialised")
        if t.is_quantized:
            seen[("q", id(t))] = t.numel() * t.element_size()  # ao quantized tensors: no untyped storage
            continue
        storage = t.untyped_storage()
        seen[(t.device.type, storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


# --- KV cache -------------------------------------------------------------------------------------------


def _attentions(transformer: Any) -> list[Any]:
    return list(transformer.attentions())


def measured_kv_bytes_per_stream(lm: Any, context: int) -> int:
    """Allocate one stream's caches as the streamer does (temporal: capacity min(context, lm.context);
    depth: dep_q slots) and sum their ``nbytes``."""
    capacity = min(int(context), int(lm.context))
    device, dtype = lm.device, lm.dtype
    caches = [a.make_cache(1, capacity, device, dtype) for a in _attentions(lm.transformer)]
    caches += [a.make_cache(1, lm.dep_q, device, dtype) for a in _attentions(lm.depformer)]
    total = sum(int(c.nbytes) for c in caches)
    del caches
    return total


def analytic_kv_bytes_per_stream(config: Any, context: int, dtype: torch.dtype) -> int:
    """From the config: keys + values in ``dtype`` plus one int64 absolute position per slot."""
    elem = torch.empty((), dtype=dtype).element_size()

    def per_layer(dim: int, heads: int, kv_heads: int | None, slots: int) -> int:
        kv_heads = kv_heads or heads
        return 2 * kv_heads * (dim // heads) * slots * elem + 8 * slots

    slots = min(int(context), int(config.context))
    temporal = config.num_layers * per_layer(config.dim, config.num_heads, config.num_kv_heads, slots)
    depth = config.depformer_num_layers * per_layer(
        config.depformer_dim, config.depformer_num_heads, config.depformer_num_kv_heads, config.dep_q
    )
    return int(temporal + depth)


# --- peak memory ----------------------------------------------------------------------------------------

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _vm_hwm() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakRSS:
    """Peak resident memory of this process over a region.

    Two witnesses, the larger wins: Linux's VmHWM after a reset (``clear_refs``), and a thread sampling
    RSS every 2 ms. VmHWM alone missed short spikes in long-lived processes (the kernel updates the
    high-water mark lazily from per-CPU counters); the sampler alone can miss a spike shorter than 2 ms.
    """

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.before = psutil.Process().memory_info().rss
        self.method = "sampled every 2 ms"
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            if _vm_hwm() is not None:
                self.method = "max(VmHWM after clear_refs, sampled every 2 ms)"
        except OSError:
            pass
        self._peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        hwm = _vm_hwm() if self.method.startswith("max") else None
        self.peak = max(self._peak, int(hwm or 0), psutil.Process().memory_info().rss)


class PeakCuda:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = "torch.cuda.max_memory_allocated"

    def __enter__(self) -> PeakCuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        self.before = torch.cuda.memory_allocated(self.device)
        self.build_peak: int | None = None
        return self

    def built(self) -> None:
        """The variant is built: keep the build's peak (an int4/int8 build holds the full-precision load
        for a while) and start the steady-state peak afresh."""
        torch.cuda.synchronize(self.device)
        self.build_peak = torch.cuda.max_memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.after_build = torch.cuda.memory_allocated(self.device)

    def __exit__(self, *exc: object) -> None:
        torch.cuda.synchronize(self.device)
        self.steady_peak = torch.cuda.max_memory_allocated(self.device)
        self.peak = max(self.steady_peak, self.build_peak or 0)
        # CUDA-graph pools and the caching allocator's slack show only in reserved memory
        self.reserved = torch.cuda.memory_reserved(self.device)


# --- the measurement ------------------------------------------------------------------------------------


# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "kv_cache_bytes": [("kv_cache_bytes_per_stream", {})],
    # the rise over the fresh build, not the process high-water mark (which grows over a run)
    "peak_memory": [("peak_*_increase_bytes", {})],
    "weight_bytes": [("weight_bytes", {"component": "total"})],
}


# values a run cannot use, refused by the suite loader before any work
def check(p: dict[str, Any]) -> None:
    ints_at_least(p, "contexts", 1)
    at_least(p, "batch_size", 1)
    at_least(p, "frames", 1)


# weights and caches are counted; the peak RSS / CUDA figures move with the allocator and the heap
@measurement(
    "memory",
    params=PARAMS,
    version=1,
    claims=CLAIMS,
    check=check,
    clean_heap=True,
    exact=("weight_bytes", "kv_cache_bytes*"),
)
def measure_memory(ctx: MeasureContext) -> list[MetricRecord]:
    params = merged_params(ctx, PARAMS)
    batch_size, n_frames = int(params["batch_size"]), int(params["frames"])
    make = RecordMaker(ctx, n_boot=0)
    on_cuda = str(ctx.device).startswith("cuda")
    tracker = PeakCuda(torch.device(ctx.device)) if on_cuda else PeakRSS()
    with tracker:
        model = ctx.variant.build(batch_size=batch_size, fresh=True)
        if on_cuda:
            tracker.built()
        total = 1 + max(n_frames, int(model.max_delay) + 1)
        pcm = synthetic_speech(total * model.frame_size * batch_size, model.sample_rate, ctx.seed)
        frames = stream_frames(pcm, batch_size, model.frame_size, total, getattr(model, "device", "cpu"))
        run_frames(model, frames)  # activations and the live caches count in the peak
        del frames, pcm
    ctx.progress(f"memory: {ctx.variant.name}")

    lm, codec = model.lm, model.codec
    weights = {"lm": storage_bytes(lm), "codec": storage_bytes(codec)}
    for component, nbytes in weights.items():
        make.plain("weight_bytes", nbytes, "bytes", 1, condition={"component": component})
    make.plain("weight_bytes", sum(weights.values()), "bytes", 1, condition={"component": "total"})

    kind = "cuda_allocated" if on_cuda else "rss"
    # Only the rise is the variant's own: the process's absolute peak carries whatever earlier variants
    # and measurements left behind (kept in extra, for the record).
    peak_extra = {
        "method": tracker.method,
        "batch_size": batch_size,
        "frames_run": n_frames,  # not "frames": the runner's [validity] min_frames reads that key
        "process_peak_bytes": int(tracker.peak),
        "before_bytes": int(tracker.before),
    }
    rise = make.plain(
        f"peak_{kind}_increase_bytes", tracker.peak - tracker.before, "bytes", 1, extra=peak_extra
    )
    if tracker.peak - tracker.before < 0.5 * weights["lm"]:
        # The weights were already resident: the runner handed back a model built earlier.
        rise.status = INVALID
        rise.reason = "memory rose by less than half the LM weights: the variant was not built fresh"
    if on_cuda:
        # steady state: the peak while streaming, counted from after the build (peak reset there), and
        # what the caching allocator holds (graph pools included)
        make.plain("steady_peak_cuda_allocated_bytes", tracker.steady_peak, "bytes", 1, extra=peak_extra)
        make.plain("build_peak_cuda_allocated_bytes", tracker.build_peak or 0, "bytes", 1, extra=peak_extra)
        make.plain("cuda_reserved_bytes", tracker.reserved, "bytes", 1, extra=peak_extra)

    streamer = getattr(model, "streamer", None)
    if streamer is not None and hasattr(streamer, "kv_cache_bytes"):
        held = streamer.kv_cache_bytes  # a property of reference_model.Streamer
        make.plain(
            "kv_cache_bytes_allocated_per_stream",
            (held() if callable(held) else held) / batch_size,
            "bytes",
            1,
            condition={"context": int(lm.context)},
            extra={"note": "the live streamer's caches, at the model's own context"},
        )
    if all(hasattr(lm, a) for a in ("transformer", "depformer", "config")):
        dtype = getattr(getattr(model, "spec", None), "dtype", None) or lm.dtype
        for context in params["contexts"]:
            cond = {"context": int(context)}
            extra = {
                "capacity": min(int(context), int(lm.context)),
                "dtype": str(dtype).replace("torch.", ""),
            }
            measured = measured_kv_bytes_per_stream(lm, int(context))
            analytic = analytic_kv_bytes_per_stream(lm.config, int(context), dtype)
            make.plain("kv_cache_bytes_per_stream", measured, "bytes", 1, condition=cond, extra=extra)
            make.plain(
                "kv_cache_bytes_per_stream_analytic", analytic, "bytes", 1, condition=cond, extra=extra
            )
    else:
        make.records.append(
            MetricRecord(
                suite=ctx.suite, variant=ctx.variant.name, metric="kv_cache_bytes_per_stream", value=None,
                unit="bytes", n=0, status=SKIPPED,
                reason="the model exposes no transformer/depformer attention layers to allocate caches from",
            )
        )  # fmt: skip
    del model, lm, codec, streamer
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
    return make.records

#!/usr/bin/env python
"""Exercise every CUDA path of the reference model once, on one GPU, in under 8 minutes.

    python scripts/gpu_check.py [--skip-7b] [--budget-s 460] [--json out.json]

Prints what it found (torch, CUDA device, flash-attn, triton), then one line per path:
PASS / FAIL / SKIP, with the key timing. Paths (issue 11):

  kernels-int8 / kernels-int4   aten int8 / int4 (tinygemm) kernels against the reference layout on the
                                7B's linear shapes, bf16, M = 1 and 16 (CUDA-event timing)
  flash-attend                  flash_attn_func / flash_attn_with_kvcache through ``attend`` against an
                                fp32 eager reference: fills 1, 17, 3000, 32 and 8 KV heads, a ragged
                                batch, the static (graph) span, a wrapped ring, a 250-token prefill
  midsize-save-reload           a mid-size Moshi config saved and reloaded on CUDA in bf16 (nothing on meta)
  variant:<flags>               baseline, attn=flash, cuda-graphs, attn=flash,int4=rtn,cuda-graphs, int8,
                                int4=awq, compile on it: builds, streams, kernels in the report
  graphed-equals-eager-*        graphed tokens equal eager tokens, greedy and sampled with the same seed
  7b-random                     a random bf16 7B: load time, steady-state peak memory, graphed step
  cli:<suite>                   vemi-eval run latency|memory|attention|throughput --quick on the mid-size
                                config with flags, each exiting 0

On a machine without CUDA it runs what a CPU can (the flash argument construction against a stand-in,
the mid-size save/reload in fp32, a CLI run on CPU) and SKIPs every CUDA path, visibly.

Exit codes: 0 every path ran and passed; 1 at least one FAIL; 3 no FAIL but some paths were SKIPPED
(no CUDA device, no flash-attn wheel, no triton, the time budget spent, --skip-7b); 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

MIDSIZE = {  # a Moshi-shaped LM small enough to build, save and stream in seconds on one GPU
    "dim": 1024,
    "num_heads": 16,
    "num_layers": 8,
    "depformer_dim": 512,
    "depformer_dim_feedforward": 2112,
    "depformer_num_heads": 8,
    "depformer_num_layers": 2,
}
LINEAR_SHAPES_7B = [(12288, 4096), (4096, 4096), (22528, 4096), (4096, 11264)]  # (out, in)


class Skip(Exception):
    """A path this machine cannot run (said in one line)."""


@dataclass
class Result:
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str
    seconds: float
    timing: dict[str, float] = field(default_factory=dict)


class Checks:
    def __init__(self, budget_s: float) -> None:
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.results: list[Result] = []

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def run(self, name: str, fn: Callable[[], tuple[str, dict[str, float]]], *, needs_s: float = 0.0) -> None:
        t = time.perf_counter()
        if self.left_s() < needs_s:
            result = Result(
                name, "SKIP", f"time budget: {self.left_s():.0f} s left, needs ~{needs_s:.0f}", 0.0
            )
        else:
            try:
                detail, timing = fn()
                result = Result(name, "PASS", detail, time.perf_counter() - t, timing)
            except Skip as exc:
                result = Result(name, "SKIP", str(exc), time.perf_counter() - t)
            except Exception as exc:  # a failing path must not stop the others
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                tb = traceback.format_exc(limit=-3).strip().splitlines()
                where = next((ln.strip() for ln in reversed(tb) if ln.strip().startswith("File")), "")
                result = Result(
                    name, "FAIL", f"{type(exc).__name__}: {first} [{where}]", time.perf_counter() - t
                )
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        self.results.append(result)
        timing = " ".join(f"{k}={v:.3g}" for k, v in result.timing.items())
        print(f"{result.status:4}  {name:42} {result.seconds:6.1f}s  {result.detail}  {timing}", flush=True)

    def exit_code(self) -> int:
        statuses = {r.status for r in self.results}
        return 1 if "FAIL" in statuses else 3 if "SKIP" in statuses else 0


# --- environment ---------------------------------------------------------------------------------------


@dataclass
class Env:
    torch: str
    cuda: bool
    device: str
    capability: str
    bf16: bool
    flash_attn: str | None
    triton: str | None

    @classmethod
    def probe(cls) -> Env:
        cuda = torch.cuda.is_available()
        flash = triton = None
        try:
            import flash_attn

            flash = flash_attn.__version__
        except Exception:  # ImportError, or a wheel built for another torch (undefined symbol)
            pass
        try:
            import triton as _triton

            triton = _triton.__version__
        except Exception:
            pass
        return cls(
            torch=torch.__version__,
            cuda=cuda,
            device=torch.cuda.get_device_name(0) if cuda else "cpu",
            capability=".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else "-",
            bf16=bool(cuda and torch.cuda.is_bf16_supported()),
            flash_attn=flash,
            triton=triton,
        )


def need_cuda(env: Env) -> None:
    if not env.cuda:
        raise Skip("no CUDA device")


def need_flash(env: Env) -> None:
    need_cuda(env)
    if env.flash_attn is None:
        raise Skip("flash-attn not importable here (no wheel for this torch/CUDA)")


def cuda_ms(fn: Callable[[], object], reps: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` by CUDA events (kernel time, not launch overhead + host sync)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


# --- kernels --------------------------------------------------------------------------------------------


def check_kernels(env: Env, bits: int) -> tuple[str, dict[str, float]]:
    need_cuda(env)
    from reference_model.quant.linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear
    from reference_model.quant.rtn import rtn_quantize

    dev, dt = torch.device("cuda"), torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(0)
    worst, timing = 0.0, {}
    for n, k in LINEAR_SHAPES_7B:
        w = torch.randn(n, k, device=dev, generator=g) * k**-0.5
        qw = rtn_quantize(w, bits, 128)
        if bits == 8:
            fast = Int8WeightOnlyLinear(qw, dtype=dt, device=dev)
            ref = Int8WeightOnlyLinear(qw, dtype=dt, device=dev)
            ref.force_reference = True
            want = "aten._weight_int8pack_mm"
        else:
            fast = Int4WeightOnlyLinear(qw, dtype=dt, device=dev)
            ref = Int4WeightOnlyLinear(qw, dtype=dt, device=dev, layout="reference")
            want = "aten._weight_int4pack_mm"
        if fast.kernel_name() != want:
            raise AssertionError(f"{n}x{k}: layer uses {fast.kernel_name()}, expected {want}")
        for m in (1, 16):
            x = torch.randn(m, k, device=dev, dtype=dt, generator=g)
            with torch.inference_mode():
                y, y_ref = fast(x).float(), ref(x).float()
            err = float((y - y_ref).norm() / y_ref.norm())
            worst = max(worst, err)
            if err > 2e-2:
                raise AssertionError(f"{n}x{k} M={m}: relative error {err:.3g} against the reference layout")
            if (n, k) == (12288, 4096):
                with torch.inference_mode():
                    timing[f"M{m}_kernel_ms"] = cuda_ms(lambda f=fast, x=x: f(x))
                    timing[f"M{m}_reference_ms"] = cuda_ms(lambda r=ref, x=x: r(x))
    return f"4 shapes x M=1,16 match the reference layout (worst rel err {worst:.2e})", timing


# --- attention ------------------------------------------------------------------------------------------


def filled_cache(fills: list[int], kv_heads: int, capacity: int, device, dtype, seed: int):
    """A ring cache of batch len(fills) where item b has streamed positions 0..fills[b]-1 (beyond the
    capacity the ring wrapped: each slot holds the latest position that maps to it)."""
    from reference_model.probes import RingKVCache

    B, D = len(fills), 128
    cache = RingKVCache(B, kv_heads, D, capacity, device=device, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(seed)
    for b, f in enumerate(fills):
        n = min(f, capacity)
        slots = torch.arange(n, device=device)
        cache.slot_positions[b, :n] = slots + capacity * torch.div(
            f - 1 - slots, capacity, rounding_mode="floor"
        )
        cache.keys[b, :, :n] = torch.randn(kv_heads, n, D, device=device, generator=g).to(dtype)
        cache.values[b, :, :n] = torch.randn(kv_heads, n, D, device=device, generator=g).to(dtype)
    return cache


def attention_case(
    fills: list[int], kv_heads: int, capacity: int, span: int | None, device, dtype, attend_fn
):
    """max |attend(flash form) - eager fp32| for one query per item at position fill - 1."""
    from reference_model.probes import StepPositions, attend, step_kernel

    cache = filled_cache(fills, kv_heads, capacity, device, dtype, seed=sum(fills) + kv_heads)
    B = len(fills)
    pos = torch.tensor([f - 1 for f in fills], device=device)
    common = fills[0] - 1 if len(set(fills)) == 1 and span is None else None
    use_span = span if span is not None else min(max(fills), capacity)
    step = StepPositions(pos, common=common, span=use_span)
    keys, values, mask = cache.read(step)
    g = torch.Generator(device=device).manual_seed(7)
    q = torch.randn(B, 32, 1, 128, device=device, generator=g).to(dtype)
    kernel = step_kernel("flash", 1, mask is not None, True)
    seqlens = None
    if kernel == "flash_attn_with_kvcache":
        seqlens = torch.clamp(pos + 1, max=keys.shape[2]).to(torch.int32)
    out = attend_fn(q, keys, values, mask, kernel, cache_seqlens=seqlens)
    ref = attend(q.float(), keys.float(), values.float(), mask, "eager")
    return float((out.float() - ref).abs().max()), kernel


def check_flash(env: Env) -> tuple[str, dict[str, float]]:
    need_flash(env)
    from reference_model.probes import attend

    dev, dt = torch.device("cuda"), torch.bfloat16
    worst, kernels = 0.0, set()
    cases = []
    for kv in (32, 8):
        for fill in (1, 17, 3000):
            cases.append(([fill, fill], kv, 3000, None))  # items share a history: flash_attn_func
            cases.append(([fill, max(1, fill // 3)], kv, 3000, None))  # ragged: with_kvcache
            cases.append(([fill, 1], kv, 3000, 3000))  # the static span of a captured step
        cases.append(([150, 40], kv, 64, None))  # a wrapped ring (capacity 64)
    for fills, kv, cap, span in cases:
        err, kernel = attention_case(fills, kv, cap, span, dev, dt, attend)
        kernels.add(kernel)
        worst = max(worst, err)
        if err > 2e-2:
            raise AssertionError(f"fills {fills} kv_heads {kv} capacity {cap}: max err {err:.3g} ({kernel})")
    # a 250-token prefill (several queries, causal): flash_attn_func(causal=True)
    g = torch.Generator(device=dev).manual_seed(3)
    q = torch.randn(1, 32, 250, 128, device=dev, generator=g).to(dt)
    k = torch.randn(1, 8, 250, 128, device=dev, generator=g).to(dt)
    v = torch.randn(1, 8, 250, 128, device=dev, generator=g).to(dt)
    out = attend(q, k, v, None, "flash")
    causal = torch.ones(250, 250, dtype=torch.bool, device=dev).tril()
    ref = attend(q.float(), k.float(), v.float(), causal, "eager")
    err = float((out.float() - ref).abs().max())
    if err > 2e-2:
        raise AssertionError(f"250-token prefill: max err {err:.3g}")
    # kernel timing at fill 3000, 32 heads, ragged batch of 2: flash_with_kvcache vs sdpa with the mask
    from reference_model.probes import StepPositions

    cache = filled_cache([3000, 1000], 32, 3000, dev, dt, seed=11)
    pos = torch.tensor([2999, 999], device=dev)
    keys, values, mask = cache.read(StepPositions(pos, common=None, span=3000))
    qq = torch.randn(2, 32, 1, 128, device=dev, dtype=dt)
    seqlens = (pos + 1).to(torch.int32)
    timing = {
        "flash_kvcache_ms": cuda_ms(
            lambda: attend(qq, keys, values, mask, "flash_attn_with_kvcache", cache_seqlens=seqlens)
        ),
        "sdpa_masked_ms": cuda_ms(lambda: attend(qq, keys, values, mask, "sdpa")),
    }
    return (
        f"{len(cases)} cases + prefill, kernels {sorted(kernels)}, worst max err {max(worst, err):.2e}",
        timing,
    )


def check_flash_standin() -> tuple[str, dict[str, float]]:
    """CPU: the flash_attn_with_kvcache arguments, fed to a stand-in with flash's semantics, give eager's
    masked result (ragged, static span, wrapped ring)."""
    from reference_model.lm.transformer import flash_kvcache_args
    from reference_model.probes import attend

    def standin(q, k, v, mask, kernel, cache_seqlens=None):
        if kernel != "flash_attn_with_kvcache":
            return attend(q, k, v, mask, "sdpa" if mask is not None else "eager")
        a = flash_kvcache_args(q, k, v, cache_seqlens)
        out = []
        for b in range(a["q"].shape[0]):
            n = int(a["cache_seqlens"][b])
            qb = a["q"][b : b + 1].transpose(1, 2)
            kb = a["k_cache"][b : b + 1, :n].transpose(1, 2)
            vb = a["v_cache"][b : b + 1, :n].transpose(1, 2)
            out.append(attend(qb, kb, vb, None, "eager").transpose(1, 2))
        return torch.cat(out).transpose(1, 2)

    worst = 0.0
    for fills, kv, cap, span in (([17, 5], 8, 64, None), ([17, 1], 8, 64, 64), ([150, 40], 4, 64, None)):
        err, kernel = attention_case(fills, kv, cap, span, torch.device("cpu"), torch.float32, standin)
        assert kernel == "flash_attn_with_kvcache", kernel
        worst = max(worst, err)
        if err > 1e-5:
            raise AssertionError(f"stand-in fills {fills}: max err {err:.3g}")
    return f"3 cases: per-item cache_seqlens reproduce the masked eager result (max err {worst:.1e})", {}


# --- mid-size model ------------------------------------------------------------------------------------


@dataclass
class Midsize:
    config: Path
    checkpoint: Path


def make_midsize(tmp: Path, device: str, dtype: torch.dtype) -> Midsize:
    from reference_model.checkpoint import save
    from reference_model.config import PRESETS_DIR
    from reference_model.lm import load_lm

    cfg = json.loads((PRESETS_DIR / "tiny_lm.json").read_text()) | MIDSIZE
    config = tmp / "midsize.json"
    config.write_text(json.dumps(cfg))
    torch.manual_seed(0)
    lm = load_lm(str(config), device=device, dtype=dtype)
    ckpt = tmp / "midsize.safetensors"
    save(lm, ckpt)
    return Midsize(config, ckpt)


def check_save_reload(mid: Midsize, device: str, dtype: torch.dtype) -> tuple[str, dict[str, float]]:
    from safetensors.torch import load_file

    from reference_model.lm import load_lm

    t = time.perf_counter()
    lm = load_lm(str(mid.config), mid.checkpoint, device=device, dtype=dtype)
    load_s = time.perf_counter() - t
    tensors = list(lm.parameters()) + list(lm.buffers())
    on_meta = [t for t in tensors if t.is_meta]
    if on_meta:
        raise AssertionError(f"{len(on_meta)} tensors left on meta")
    wrong = {str(t.dtype) for t in lm.parameters() if t.is_floating_point() and t.dtype != dtype}
    if wrong:
        raise AssertionError(f"parameters in {sorted(wrong)}, expected {dtype}")
    saved = load_file(str(mid.checkpoint))
    for name, tensor in lm.state_dict().items():
        if not torch.equal(tensor.cpu(), saved[name].to(tensor.dtype)):
            raise AssertionError(f"{name} differs from the saved file")
    n = sum(p.numel() for p in lm.parameters())
    return f"{n / 1e6:.0f}M params reloaded on {device} in {str(dtype).removeprefix('torch.')}", {
        "load_s": load_s
    }


def stream(duplex, steps: int, reset_at: int | None, seed: int) -> tuple[list, list[float]]:
    """Greedy/sampled stream of seeded noise; a partial reset at ``reset_at``; tokens and step ms."""
    g = torch.Generator().manual_seed(seed)
    pcm = torch.randn(steps, duplex.batch_size, 1, duplex.frame_size, generator=g) * 0.1
    out, times = [], []
    torch.manual_seed(seed)
    for i in range(steps):
        if i == reset_at:
            mask = torch.zeros(duplex.batch_size, dtype=torch.bool)
            mask[-1] = True
            duplex.reset(mask.to(duplex.device))
        duplex.sync()
        t = time.perf_counter()
        tokens = duplex.lm_step(duplex.encode_user(pcm[i].to(duplex.device)))
        if tokens is not None:
            duplex.decode_model(tokens.clamp_min(0))
        duplex.sync()
        times.append((time.perf_counter() - t) * 1e3)
        out.append(None if tokens is None else tokens.clone())
    return out, times


def build(mid: Midsize, flags: str | None, device: str, dtype: torch.dtype, temp: float = 0.0):
    from reference_model import DuplexSpec, build_duplex

    spec = DuplexSpec(
        lm=str(mid.config),
        lm_checkpoint=str(mid.checkpoint),
        codec="tiny",
        flags=flags,
        device=device,
        dtype=dtype,
        batch_size=2,
        temp=temp,
        temp_text=temp,
        seed=0,
    )
    t = time.perf_counter()
    duplex = build_duplex(spec)
    return duplex, time.perf_counter() - t


EXPECT_KERNEL = {  # flag -> (where in report.kernels(), what must appear)
    "attn=flash": ("attention", "flash_attn"),
    "int4": ("linear", "aten._weight_int4pack_mm"),
    "int8": ("linear", "aten._weight_int8pack_mm"),
}


def check_variant(
    mid: Midsize, flags: str | None, env: Env, cache: dict, device: str = "cuda"
) -> tuple[str, dict[str, float]]:
    if device == "cuda":
        need_cuda(env)
    if flags and "attn=flash" in flags:
        need_flash(env)
    if flags and "compile" in flags and env.triton is None:
        raise Skip("triton not installed (torch.compile on CUDA needs it)")
    duplex, build_s = build(mid, flags, device, torch.bfloat16 if device == "cuda" else torch.float32)
    tokens, times = stream(duplex, 24, reset_at=10, seed=1)
    cache[flags or "baseline"] = tokens
    report = duplex.report()
    kernels = report.kernels()
    given = {f.split("=")[0]: f for f in (flags or "").split(",") if f}
    for flag, (where, needle) in EXPECT_KERNEL.items():
        name = flag.split("=")[0]
        if name in given and ("=" not in flag or given[name] == flag):
            found = json.dumps(kernels[where])
            if needle not in found:
                raise AssertionError(f"{flags}: expected {needle} in {where} kernels, got {found}")
    produced = [t for t in tokens if t is not None]
    if not produced:
        raise AssertionError("no tokens in 24 steps")
    steady = statistics.median(times[12:])
    return f"kernels {json.dumps(kernels['attention'])} {json.dumps(kernels['linear'])}", {
        "build_s": build_s,
        "step_ms": steady,
        **{k: v for k, v in report.build_stats().items() if k.endswith("_s")},
    }


def check_graphed_equal(mid: Midsize, env: Env, flags: str, temp: float) -> tuple[str, dict[str, float]]:
    need_cuda(env)
    if "attn=flash" in flags:
        need_flash(env)
    eager_flags = ",".join(f for f in flags.split(",") if f != "cuda-graphs") or None
    got = {}
    for f in (flags, eager_flags):
        duplex, _ = build(mid, f, "cuda", torch.bfloat16, temp=temp)
        got[f], _ = stream(duplex, 24, reset_at=10, seed=5)
        del duplex
    a, b = got[flags], got[eager_flags]
    same = all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
        for x, y in zip(a, b)
    )
    if not same:
        n = sum(1 for x, y in zip(a, b) if x is not None and y is not None and not torch.equal(x, y))
        raise AssertionError(f"{n} of 24 frames differ between {flags} and {eager_flags or 'baseline'}")
    return f"24 frames (partial reset at 10) identical to {eager_flags or 'baseline'}", {}


def check_7b(tmp: Path, env: Env) -> tuple[str, dict[str, float]]:
    need_cuda(env)
    from reference_model import DuplexSpec, build_duplex
    from reference_model.checkpoint import save
    from reference_model.lm import load_lm

    free, _ = torch.cuda.mem_get_info()
    if free < 60 * 2**30:
        raise Skip(f"{free / 2**30:.0f} GiB free on the GPU (the random init needs ~50)")
    torch.manual_seed(0)
    t = time.perf_counter()
    lm = load_lm("moshi-7b", device="cuda", dtype=torch.bfloat16)
    ckpt = tmp / "moshi7b-random.safetensors"
    save(lm, ckpt)
    write_s = time.perf_counter() - t
    del lm
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    spec = DuplexSpec(
        lm="moshi-7b",
        lm_checkpoint=str(ckpt),
        codec="tiny",
        device="cuda",
        dtype=torch.bfloat16,
        flags="cuda-graphs",
        temp=0.0,
        temp_text=0.0,
    )
    duplex = build_duplex(spec)
    build_s = time.perf_counter() - t
    build_peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    _, times = stream(duplex, 16, reset_at=None, seed=2)
    ckpt.unlink()
    return "random bf16 7B from safetensors, cuda-graphs", {
        "write_s": write_s,
        "build_s": build_s,
        "build_peak_gib": build_peak,
        "steady_peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "reserved_gib": torch.cuda.memory_reserved() / 2**30,
        "graphed_step_ms": statistics.median(times[6:]),
    }


def check_cli(mid: Midsize, suite: str, flags: str, device: str, dtype: str, tmp: Path) -> tuple[str, dict]:
    out = tmp / f"run-{suite}"
    cmd = [
        sys.executable,
        "-m",
        "vemi_eval.cli",
        "run",
        suite,
        "--quick",
        "--config",
        str(mid.config),
        "--checkpoint",
        str(mid.checkpoint),
        "--device",
        device,
        "--dtype",
        dtype,
        "--flags",
        flags,
        "--out",
        str(out),
        "--no-report",
        "--no-history",
    ]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise AssertionError(f"exit {done.returncode}: {tail}")
    return f"exit 0 ({' '.join(cmd[3:5])} --flags {flags})", {"wall_s": time.perf_counter() - t}


# --- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-7b", action="store_true", help="skip the random 7B (15 GB written to disk)")
    ap.add_argument("--budget-s", type=float, default=460.0, help="stop starting checks after this")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))

    env = Env.probe()
    print("gpu_check:", json.dumps(asdict(env)), flush=True)
    if not env.cuda:
        print(
            "gpu_check: NO CUDA DEVICE: every CUDA path below is SKIPPED; only the CPU dry run runs.",
            flush=True,
        )
    checks = Checks(args.budget_s)
    graphs_cache: dict = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp_name:
        tmp = Path(tmp_name)
        checks.run("kernels-int8", lambda: check_kernels(env, 8))
        checks.run("kernels-int4", lambda: check_kernels(env, 4))
        checks.run("flash-attend", lambda: check_flash(env))
        checks.run("flash-kvcache-args (CPU stand-in)", check_flash_standin)
        device = "cuda" if env.cuda else "cpu"
        dtype = torch.bfloat16 if env.cuda else torch.float32
        mid = make_midsize(tmp, device, dtype)
        checks.run(f"midsize-save-reload ({device})", lambda: check_save_reload(mid, device, dtype))
        for flags in (
            None,
            "attn=flash",
            "cuda-graphs",
            "attn=flash,int4=rtn,cuda-graphs",
            "int8",
            "int4=awq",
        ):
            checks.run(
                f"variant:{flags or 'baseline'}",
                lambda f=flags: check_variant(mid, f, env, graphs_cache),
                needs_s=20,
            )
        checks.run(
            "graphed-equals-eager-greedy",
            lambda: check_graphed_equal(mid, env, "cuda-graphs", 0.0),
            needs_s=30,
        )
        checks.run(
            "graphed-equals-eager-greedy (flash,int4)",
            lambda: check_graphed_equal(mid, env, "attn=flash,int4=rtn,cuda-graphs", 0.0),
            needs_s=30,
        )
        checks.run(
            "graphed-equals-eager-sampled",
            lambda: check_graphed_equal(mid, env, "cuda-graphs", 0.8),
            needs_s=30,
        )
        cli_flags = "attn=flash,int4=rtn,cuda-graphs" if env.flash_attn else "int4=rtn,cuda-graphs"
        for suite in ("latency", "memory", "attention", "throughput"):
            if env.cuda:
                checks.run(
                    f"cli:{suite}",
                    lambda s=suite: check_cli(mid, s, cli_flags, "cuda", "bfloat16", tmp),
                    needs_s=60,
                )
        if not env.cuda:  # the CLI path itself, on CPU
            checks.run(
                "cli:latency (CPU dry run)",
                lambda: check_cli(mid, "latency", "int8", "cpu", "float32", tmp),
                needs_s=60,
            )
        if not env.cuda:  # the variant check itself, on CPU in fp32
            for flags in (None, "int8"):
                checks.run(
                    f"variant:{flags or 'baseline'} (CPU dry run)",
                    lambda f=flags: check_variant(mid, f, env, graphs_cache, device="cpu"),
                    needs_s=20,
                )
        checks.run("variant:compile", lambda: check_variant(mid, "compile", env, graphs_cache), needs_s=90)
        if args.skip_7b:
            checks.results.append(Result("7b-random", "SKIP", "--skip-7b", 0.0))
            print(f"SKIP  {'7b-random':42} {0.0:6.1f}s  --skip-7b", flush=True)
        else:
            checks.run("7b-random", lambda: check_7b(tmp, env), needs_s=150)
    counts = {s: sum(r.status == s for r in checks.results) for s in ("PASS", "FAIL", "SKIP")}
    code = checks.exit_code()
    print(
        f"gpu_check: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP "
        f"in {time.perf_counter() - checks.t0:.0f} s; exit {code}",
        flush=True,
    )
    if args.json:
        args.json.write_text(
            json.dumps({"env": asdict(env), "results": [asdict(r) for r in checks.results]}, indent=1)
        )
    return code


if __name__ == "__main__":
    sys.exit(main())

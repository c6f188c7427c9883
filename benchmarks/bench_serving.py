"""Serving and compile benchmarks on the tiny preset (1 thread), measured side by side in one process.

1. Continuous vs static batching at a few Poisson arrival rates (vemi_eval.serving_sim): throughput,
   frame latency p50/p99, time to first frame, goodput (80 ms deadline), slot utilisation; ratios
   continuous / static.
2. ``compile`` vs eager: steady-state step time (medians over interleaved steps) and the compile
   (warm-up) time.

    nice .venv/bin/python benchmarks/bench_serving.py [--quick] [--skip-compile] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from reference_model import DuplexSpec, build_duplex
from vemi_eval.serving_sim import make_policy, poisson_workload, serve


def bench_serving(
    rates: list[float], capacity: int, n_conv: int, median_frames: int, seed: int
) -> list[dict]:
    duplex = build_duplex(DuplexSpec(lm="tiny", codec="tiny", batch_size=capacity, seed=seed))
    rows = []
    for rate in rates:
        convs = poisson_workload(
            n_conv, rate, median_frames=median_frames, min_frames=8, max_frames=4 * median_frames, seed=seed
        )
        out = {}
        # alternate the two policies so that machine load drifts hit both alike
        for name in ("static", "continuous"):
            res = serve(duplex, convs, make_policy(name, static_timeout_s=1.0))
            out[name] = res.summary()
        rows.append({"arrival_rate": rate, **{f"{k}": v for k, v in out.items()}})
        s, c = out["static"], out["continuous"]
        print(f"rate {rate:5.2f}/s | static     {_line(s)}", flush=True)
        print(f"              | continuous {_line(c)}", flush=True)
        ratios = {
            k: c[k] / s[k] for k in ("throughput_fps", "ttff_p50_s", "frame_latency_p99_s", "goodput") if s[k]
        }
        print("              | continuous/static: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    return rows


def _line(m: dict) -> str:
    return (
        f"{m['throughput_fps']:6.2f} frames/s, latency p50 {m['frame_latency_p50_s'] * 1e3:6.0f} "
        f"p99 {m['frame_latency_p99_s'] * 1e3:6.0f} ms, ttff p50 {m['ttff_p50_s'] * 1e3:6.0f} ms, "
        f"goodput {m['goodput']:.2f}, slots used {m['slot_utilisation']:.2f}, "
        f"step {m['step_wall_p50_s'] * 1e3:.0f} ms"
    )


def bench_compile(steps: int, seed: int) -> dict:
    spec = dict(lm="tiny", codec="tiny", batch_size=1, seed=seed, temp=0.0, temp_text=0.0)
    eager = build_duplex(DuplexSpec(**spec))
    t0 = time.perf_counter()
    compiled = build_duplex(DuplexSpec(**spec, flags="compile"))
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(seed)
    pcm = torch.randn(steps, 1, 1, eager.frame_size, generator=g) * 0.1
    te, tc, same = [], [], True
    for i in range(steps):  # interleaved: each pair sees the same machine load
        for model, times in ((eager, te), (compiled, tc)):
            t = time.perf_counter()
            text, _ = model.step(pcm[i])
            times.append(time.perf_counter() - t)
            if model is eager:
                ref = text
        same &= (ref is None and text is None) or bool(torch.equal(ref, text))
    skip = eager.max_delay + 2
    e, c = statistics.median(te[skip:]), statistics.median(tc[skip:])
    out = {
        "eager_step_ms": e * 1e3,
        "compiled_step_ms": c * 1e3,
        "speedup": e / c,
        "compile_s": compiled.report().build_stats()["compile_s"],
        "build_with_compile_s": build_s,
        "greedy_tokens_equal": same,
        "steps": steps,
    }
    print(
        f"compile: eager {out['eager_step_ms']:.1f} ms/step, compiled {out['compiled_step_ms']:.1f} ms/step "
        f"(speedup {out['speedup']:.2f}x), compile (warm-up) {out['compile_s']:.1f} s",
        flush=True,
    )
    print(f"compile: greedy tokens equal to eager over {steps} steps: {same}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--skip-serving", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    result = {"threads": a.threads, "torch": torch.__version__}
    if not a.skip_serving:
        rates = [0.5, 1.0] if a.quick else [0.5, 1.0, 2.0]
        n_conv, median = (8, 16) if a.quick else (16, 24)
        result["serving"] = bench_serving(rates, 4, n_conv, median, a.seed)
    if not a.skip_compile:
        result["compile"] = bench_compile(30 if a.quick else 60, a.seed)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""One LM streaming step, ours (reference_model Streamer) vs the public moshi package (LMGen), side by side.

Same process, same weights (moshi's random init, saved and loaded into ours), same user codes, same
sampling settings (temp 0.8/0.7, top-k 250/25). Steps alternate between the two so that both see the
same machine load. The first step of a fresh stream is reported apart (moshi compiles its out_norm on
the first call); the median excludes warm-up.

    nice .venv/bin/python benchmarks/bench_lm.py --threads 1,2 --steps 120
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build_pair(preset: str, seed: int):
    from moshi.models.lm import LMGen
    from moshi.models.lm import LMModel as MoshiLM

    from reference_model import Streamer, load_lm
    from reference_model.checkpoint import save
    from reference_model.config import LM_PRESETS, PRESETS_DIR

    cfg = json.loads((PRESETS_DIR / LM_PRESETS[preset]).read_text())
    kwargs = {k: v for k, v in cfg.items() if k != "depformer_causal"}
    torch.manual_seed(seed)
    ref = MoshiLM(device="cpu", dtype=torch.float32, **kwargs).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lm.safetensors"
        save(ref, path)
        ours = load_lm(preset, path)
    return ref, ours, LMGen, Streamer


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1e3


def bench(preset: str, threads: int, steps: int, warmup: int, seed: int) -> dict:
    torch.set_num_threads(threads)
    ref, ours, LMGen, Streamer = build_pair(preset, seed)
    gen = LMGen(ref, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
    streamer = Streamer(ours, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
    rng = torch.Generator().manual_seed(seed)
    n_user = ours.n_q - ours.dep_q
    codes = [torch.randint(0, ours.card, (1, n_user, 1), generator=rng) for _ in range(warmup + steps + 1)]
    times: dict[str, list[float]] = {"moshi": [], "ours": []}
    with torch.no_grad(), gen.streaming(1):
        first = {"moshi": timed(gen.step, codes[0]), "ours": timed(streamer.step, codes[0])}
        for i in range(1, warmup + steps + 1):
            order = ("moshi", "ours") if i % 2 else ("ours", "moshi")
            for who in order:
                ms = timed(gen.step if who == "moshi" else streamer.step, codes[i])
                if i > warmup:
                    times[who].append(ms)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "preset": preset,
        "threads": threads,
        "steps": steps,
        "first_step_ms": first,
        "median_ms": med,
        "p90_ms": {k: sorted(v)[int(0.9 * len(v))] for k, v in times.items()},
        "ratio_ours_over_moshi": med["ours"] / med["moshi"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        r = bench(args.preset, threads, args.steps, args.warmup, args.seed)
        results.append(r)
        m, o = r["median_ms"]["moshi"], r["median_ms"]["ours"]
        print(
            f"{r['preset']} threads={threads}: moshi {m:.2f} ms, ours {o:.2f} ms per step "
            f"(median of {r['steps']}), "
            f"ratio ours/moshi {r['ratio_ours_over_moshi']:.3f}; first step moshi "
            f"{r['first_step_ms']['moshi']:.1f} ms, ours {r['first_step_ms']['ours']:.1f} ms",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

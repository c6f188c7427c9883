"""Speculative decoding and Mixture of Depths, side by side in one process (tiny preset, 1 thread).

Depth stage: the baseline's sequential depformer loop against ``speculative=K`` (K = 2, 4, 8) on the SAME
(hidden state, text token) inputs, recorded from a baseline stream; calls are interleaved variant by
variant so machine noise hits all alike. Reported: median time per frame, speed-up (baseline / variant),
acceptance rate, verification passes per frame.

Temporal stage: ``mod=C`` (C = 1, 0.75, 0.5) full LM steps on the same user codes, interleaved frame by
frame; median step time, ratio to C = 1, processed share and FLOPs saved (temporal linears).

    nice .venv/bin/python benchmarks/bench_speculative.py [--frames 60] [--temp 0.8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from reference_model import DuplexSpec, build_duplex
from reference_model.report import ModReport, SpeculativeReport


def _build(flags: list[str], temp: float):
    return build_duplex(DuplexSpec(lm="tiny", codec="tiny", flags=flags, temp=temp, temp_text=temp, seed=0))


def _codes(frames: int, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 2048, (1, 8, 1), generator=gen) for _ in range(frames)]


@torch.no_grad()
def bench_depth(frames: int, temp: float, ks: tuple[int, ...], reps: int) -> list[dict]:
    base = _build([], temp)
    inputs = []
    sample = base.streamer.depformer_sample

    def record(hidden, text):
        inputs.append((hidden.clone(), text.clone()))
        return sample(hidden, text)

    base.streamer.depformer_sample = record
    for c in _codes(frames):
        base.lm_step(c)
    base.streamer.depformer_sample = sample
    variants = [("baseline", base)] + [(f"speculative={k}", _build([f"speculative={k}"], temp)) for k in ks]
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    for _name, model in variants:  # warm-up
        for hidden, text in inputs[:3]:
            model.streamer.depformer_sample(hidden, text)
        stats = _spec_stats(model)
        if stats is not None:
            stats.reset()
    for _ in range(reps):
        for hidden, text in inputs:
            for name, model in variants:
                t0 = time.perf_counter()
                model.streamer.depformer_sample(hidden, text)
                times[name].append(time.perf_counter() - t0)
    base_ms = statistics.median(times["baseline"]) * 1e3
    rows = []
    for name, model in variants:
        ms = statistics.median(times[name]) * 1e3
        stats = _spec_stats(model)
        rows.append(
            {
                "variant": name,
                "depth_ms_per_frame": round(ms, 3),
                "speedup_vs_baseline": round(base_ms / ms, 3),
                "acceptance_rate": None if stats is None else round(stats.acceptance_rate, 3),
                "rounds_per_frame": None if stats is None else round(stats.rounds / stats.frames, 2),
                "tokens_per_round": None if stats is None else round(stats.tokens_per_round, 2),
            }
        )
    return rows


def _spec_stats(model):
    entry = model.report().get(SpeculativeReport)
    return None if entry is None else entry.stats


@torch.no_grad()
def bench_mod(frames: int, temp: float, capacities: tuple[float, ...]) -> list[dict]:
    variants = [(f"mod={c}", _build([f"mod={c}"], temp)) for c in capacities]
    for _, model in variants:
        model.report().get(ModReport).stats.reset()
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    for c in _codes(frames):
        for name, model in variants:
            t0 = time.perf_counter()
            model.lm_step(c)
            times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times[variants[0][0]][3:])
    rows = []
    for name, model in variants:
        ms = statistics.median(times[name][3:])
        stats = model.report().get(ModReport).stats
        rows.append(
            {
                "variant": name,
                "lm_step_ms": round(ms * 1e3, 3),
                "ratio_to_first": round(ms / ref, 3),
                "processed_share": round(stats.summary()["processed_share"], 3),
                "per_layer": [round(s, 3) for s in stats.processed_share],
                "flops_saved_share": round(stats.flops_saved_share, 3),
                "router_fit_r2": [round(r, 3) for r in stats.fit_r2],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--temp", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {
        "threads": 1,
        "frames": args.frames,
        "temp": args.temp,
        "depth": bench_depth(args.frames, args.temp, (2, 4, 8), args.reps),
        "mod": bench_mod(args.frames, args.temp, (1.0, 0.75, 0.5)),
    }
    for section in ("depth", "mod"):
        for row in result[section]:
            print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

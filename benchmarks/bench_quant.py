"""Weight-only quantization side by side, in one process: step time and weight bytes of fp32 vs int8 vs
int4 (aten kernels and the readable fallback; torch.ao dynamic int8 as the peer), on Moshi-shaped linear
stacks and the tiny LM; output error of RTN / GPTQ / AWQ on the tiny LM's own streaming activations;
greedy-token agreement (teacher-forced) and KV bytes of the int8 window cache.

``--only kernels``: per ``--preset`` (repeatable; default tiny and moshi-7b) and per linear shape of one
temporal and one depth layer (the 7B: qkv 4096->12288, out 4096->4096, gated FFN 4096->22528 and
11264->4096, depformer 1024->3072 ...), batch 1, one thread: every kernel of every width this torch build
has (fp32 and bf16 ``F.linear``; int8: ``_weight_int8pack_mm`` and the readable fallback with fp32 and
bf16 activations, the dynamic int8 W8A8 layer of ``int8=dynamic`` and torch.ao's own as a peer; int4:
``_weight_int4pack_mm_for_cpu`` and the fallback with fp32 and bf16 activations), ``chosen_by`` marking
the one each flag value runs here, and a summary per layer: each flag's ratio to fp32 and to the fastest
kernel of its kind and width.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_quant.py [--quick] [--json out.json]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quant.py --only kernels --preset tiny \
        --preset moshi-7b --json kernels.json

Variants are timed round-robin (each repeat runs every variant once) so that load on a shared machine
hits them alike; figures are medians, reported as ratios to fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from reference_model.quant.dynamic import Int8DynamicLinear, dynamic_int8_ok
from reference_model.quant.linear import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    dtype_name,
    tensor_bytes,
)
from reference_model.quant.rtn import rtn_quantize
from reference_model.quant.swap import make_quantized, pick_group_size

# One transformer layer's linears (in, out): the 7B depformer's real shape, the 7B temporal at half width.
STACKS = {
    "depformer-7b (dim 1024)": [(1024, 3072), (1024, 1024), (1024, 5632), (2816, 1024)],
    "temporal-7b/2 (dim 2048)": [(2048, 6144), (2048, 2048), (2048, 11264), (5632, 2048)],
}


def _stack(shapes, seed: int = 0) -> nn.ModuleList:
    torch.manual_seed(seed)
    return nn.ModuleList(nn.Linear(k, n, bias=False) for k, n in shapes)


def _variant(stack: nn.ModuleList, kind: str) -> nn.ModuleList:
    if kind == "fp32":
        return stack
    if kind == "ao-dynamic-int8 (W8A8)":
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(stack), {nn.Linear}, dtype=torch.qint8)
    out = nn.ModuleList()
    for lin in stack:
        if kind.startswith("int8"):
            layer = Int8WeightOnlyLinear.from_linear(lin, rtn_quantize(lin.weight, 8))
            layer.force_reference = kind.endswith("fallback")
        else:
            layout = "reference" if kind.endswith("fallback") else "auto"
            layer = Int4WeightOnlyLinear.from_linear(lin, rtn_quantize(lin.weight, 4, 128), layout=layout)
        out.append(layer)
    return out


def _stack_bytes(stack: nn.ModuleList) -> int:
    return tensor_bytes(stack)


def _ao_bytes(stack: nn.ModuleList) -> int:
    """Bytes of torch.ao's packed int8 weights: codes plus (per-channel) float64 scales and int64 zeros."""
    total = 0
    for m in stack:
        w = m.weight()
        total += w.int_repr().numel()
        if w.qscheme() == torch.per_channel_affine:
            total += 16 * w.q_per_channel_scales().numel()
        else:
            total += 16
    return total


def time_round_robin(fns: dict[str, callable], repeats: int, inner: int) -> dict[str, float]:
    """Median seconds per call of each fn, variants interleaved within every repeat."""
    samples = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(inner):
                f()
            samples[k].append((time.perf_counter() - t) / inner)
    return {k: statistics.median(v) for k, v in samples.items()}


def bench_stacks(threads: list[int], repeats: int) -> list[dict]:
    rows = []
    kinds = ["fp32", "int8", "int8-fallback", "int4", "int4-fallback", "ao-dynamic-int8 (W8A8)"]
    for name, shapes in STACKS.items():
        base = _stack(shapes)
        variants = {k: _variant(base, k) for k in kinds}
        for th in threads:
            torch.set_num_threads(th)
            inputs = [torch.randn(1, k) for k, _ in shapes]

            def run(stack, inputs=inputs):
                def f():
                    with torch.no_grad():
                        for lin, x in zip(stack, inputs):
                            lin(x)

                return f

            times = time_round_robin({k: run(v) for k, v in variants.items()}, repeats, 1)
            for k in kinds:
                b = _ao_bytes(variants[k]) if k.startswith("ao") else _stack_bytes(variants[k])
                rows.append(
                    {
                        "stack": name,
                        "threads": th,
                        "variant": k,
                        "ms": times[k] * 1e3,
                        "time_vs_fp32": times[k] / times["fp32"],
                        "weight_bytes": b,
                        "bytes_vs_fp32": b / _stack_bytes(base),
                    }
                )
    return rows


def preset_linear_shapes(preset: str) -> dict[str, tuple[int, int]]:
    """(in, out) of each distinct linear of the first temporal and first depth layer (and the depth input
    projection), read from the LM built on the meta device: the shapes quantization packs."""
    from reference_model.config import load_lm_config
    from reference_model.lm.model import LMModel
    from reference_model.quant.models import is_lm_quant_target

    with torch.device("meta"):
        lm = LMModel(load_lm_config(preset))
    shapes: dict[str, tuple[int, int]] = {}
    for name, module in lm.named_modules():
        first = name.startswith(("transformer.layers.0.", "depformer.layers.0.", "depformer_in.0"))
        if isinstance(module, nn.Linear) and first and is_lm_quant_target(name, module):
            n, k = module.weight.shape
            if (k, n) not in shapes.values():
                # "transformer.layers.0.self_attn.in_projs.0" -> "temporal self_attn.in_projs"
                part = "temporal" if name.startswith("transformer.") else "depth"
                short = ".".join(x for x in name.split(".")[3:] if not x.isdigit()) or name.split(".")[0]
                shapes[f"{part} {short}"] = (k, n)
    return shapes


@dataclass
class KernelVariant:
    """One way to compute a linear layer: its width, kernel and activation dtype, and the flags that pick
    it on this device."""

    width: str  # fp32 | bf16 | int8 | int4
    kernel: str
    activations: str
    module: nn.Module
    chosen_by: list[str] = field(default_factory=list)
    weight_only: bool = True  # False: W8A8, the activations are quantized too (another arithmetic)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.width, self.kernel, self.activations


def _label(layer: nn.Module) -> tuple[str, str]:
    """(kernel, activations) of a quantized layer, as the bench prints them."""
    if isinstance(layer, Int8DynamicLinear):
        return layer.kernel_name(), "int8 per row"
    return layer.kernel_name(), dtype_name(layer.activation_dtype)


# what each flag value picks, by the layers' own rule (quant.swap.make_quantized)
FLAG_KERNELS = {"int8": (8, "auto"), "int4": (4, "auto"), "int8=dynamic": (8, "dynamic")}


def kernel_variants(lin: nn.Linear) -> list[KernelVariant]:
    """Every way this torch build can compute ``lin`` (batch-1 streaming), each once."""
    w = lin.weight.detach()
    codes = {8: rtn_quantize(w, 8), 4: rtn_quantize(w, 4, pick_group_size(w.shape[1]))}
    out = [
        KernelVariant("fp32", "F.linear", "float32", lin),
        KernelVariant("bf16", "F.linear", "bfloat16", copy.deepcopy(lin).to(torch.bfloat16)),
    ]
    for act in ("fp32", "bf16"):
        for force in (False, True):
            layer = Int8WeightOnlyLinear.from_linear(lin, codes[8], activation_dtype=act)
            layer.force_reference = force
            out.append(KernelVariant("int8", *_label(layer), layer))
    if dynamic_int8_ok():
        layer = Int8DynamicLinear.from_linear(lin, codes[8])
        out.append(KernelVariant("int8", *_label(layer), layer, weight_only=False))
        # the same fbgemm op as torch.ao builds it (its own per-tensor weight observer, the whole batch
        # quantized with one scale): a peer that checks our layer's per-row loop costs nothing at batch 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ao = torch.ao.quantization.quantize_dynamic(
                nn.Sequential(copy.deepcopy(lin)), {nn.Linear}, dtype=torch.qint8
            )
        peer = KernelVariant(
            "int8", "torch.ao quantize_dynamic (peer)", "int8 per tensor", ao, weight_only=False
        )
        out.append(peer)
    for act in ("fp32", "bf16"):
        for layout in ("auto", "reference"):
            layer = Int4WeightOnlyLinear.from_linear(lin, codes[4], layout=layout, activation_dtype=act)
            out.append(KernelVariant("int4", *_label(layer), layer))
    unique: dict[tuple[str, str, str], KernelVariant] = {}
    for v in out:
        unique.setdefault(v.key, v)
    for flag, (bits, kernel) in FLAG_KERNELS.items():
        if kernel == "dynamic" and not dynamic_int8_ok():
            continue
        key = (f"int{bits}", *_label(make_quantized(lin, codes[bits], kernel)))
        unique[key].chosen_by.append(flag)
    return list(unique.values())


def bench_kernels(presets: list[str], repeats: int) -> list[dict]:
    """Per preset and layer shape: every kernel of every width, ms per call at batch 1 (an fp32 input,
    as the fp32 model hands it; bf16 F.linear gets bf16, as a bf16 model would), ratios to fp32 and bf16
    F.linear, which flag picks which kernel, and the fastest kernel of each width (weight-only and any)."""
    torch.set_num_threads(1)
    rows = []
    for preset in presets:
        for layer_name, (k, n) in preset_linear_shapes(preset).items():
            torch.manual_seed(0)
            lin = nn.Linear(k, n, bias=False)
            variants = kernel_variants(lin)
            x = torch.randn(1, k)

            def call(v: KernelVariant, x: torch.Tensor = x):
                xi = x.to(torch.bfloat16) if v.width == "bf16" else x

                def f():
                    with torch.no_grad():
                        v.module(xi)

                return f

            times = time_round_robin({v.key: call(v) for v in variants}, repeats, 1)
            fp32, bf16 = times[("fp32", "F.linear", "float32")], times[("bf16", "F.linear", "bfloat16")]
            fastest: dict[tuple[str, bool], tuple[str, str, str]] = {}  # (width, weight-only only) -> key
            for v in variants:
                for group in {(v.width, False), (v.width, v.weight_only)}:
                    if group not in fastest or times[v.key] < times[fastest[group]]:
                        fastest[group] = v.key
            for v in variants:
                t = times[v.key]
                rows.append(
                    {
                        "preset": preset,
                        "layer": layer_name,
                        "in->out": f"{k}->{n}",
                        "width": v.width,
                        "kernel": v.kernel,
                        "activations": v.activations,
                        "ms": t * 1e3,
                        "vs_fp32": t / fp32,
                        "vs_bf16": t / bf16,
                        "weight_only": v.weight_only,
                        "chosen_by": ",".join(v.chosen_by),
                        "fastest_of_width": fastest[(v.width, False)] == v.key,
                        "fastest_weight_only": fastest.get((v.width, True)) == v.key,
                    }
                )
            del variants, lin
    return rows


def kernel_summary(rows: list[dict]) -> list[dict]:
    """Per layer: fp32 and bf16 ms, and for each flag the kernel it picks, its ratio to fp32, to the
    fastest kernel of its kind (weight-only for int8/int4, W8A8 for int8=dynamic; 1.0: the flag runs the
    fastest there is) and to the fastest of its width whatever the arithmetic."""
    out = []
    layers = dict.fromkeys((r["preset"], r["layer"]) for r in rows)
    for preset, layer in layers:
        mine = [r for r in rows if (r["preset"], r["layer"]) == (preset, layer)]
        fp32 = next(r for r in mine if r["width"] == "fp32")
        bf16 = next(r for r in mine if r["width"] == "bf16")
        row = {"preset": preset, "layer": layer, "in->out": fp32["in->out"], "fp32_ms": fp32["ms"],
               "bf16_vs_fp32": bf16["vs_fp32"]}  # fmt: skip
        for flag in FLAG_KERNELS:
            chosen = next((r for r in mine if flag in r["chosen_by"].split(",")), None)
            if chosen is None:
                continue
            same = [r for r in mine if r["width"] == chosen["width"]]
            kind = min((r for r in same if r["weight_only"] == chosen["weight_only"]), key=lambda r: r["ms"])
            best = next(r for r in same if r["fastest_of_width"])
            row[f"{flag}_vs_fp32"] = chosen["vs_fp32"]
            row[f"{flag}_vs_fastest_of_its_kind"] = chosen["ms"] / kind["ms"]
            row[f"{flag}_vs_fastest_{chosen['width']}"] = chosen["ms"] / best["ms"]
            row[f"fastest_{chosen['width']}"] = f"{best['kernel']} ({best['activations']})"
        out.append(row)
    return out


def bench_methods(frames: int) -> list[dict]:
    """Relative output error of each method on held-out streaming activations of the tiny LM's temporal
    layers (calibrated on one seeded stream set, evaluated on another)."""
    from reference_model.lm import load_lm
    from reference_model.quant.calibrate import lm_calibration
    from reference_model.quant.swap import pick_group_size, quantize_weight_by

    torch.manual_seed(0)
    lm = load_lm("tiny")

    def temporal(name, module):
        return name.startswith("transformer.")

    calib = lm_calibration(lm, None, frames=frames, batch=16, seed=0, include=temporal)
    held = lm_calibration(lm, None, frames=frames // 2, batch=8, seed=1, include=temporal)
    rows = []
    for bits, group in ((8, None), (4, 128)):
        for method in ("rtn", "gptq", "awq"):
            num = den = 0.0
            t = time.perf_counter()
            for name, stats in calib.items():
                w = lm.get_submodule(name).weight.detach()
                g = None if group is None else pick_group_size(w.shape[1], group)
                qw = quantize_weight_by(method, w, bits, g, stats)
                x = held[name].samples
                num += float(((x @ (w - qw.effective_weight()).T) ** 2).sum())
                den += float(((x @ w.T) ** 2).sum())
            rows.append(
                {
                    "bits": bits,
                    "method": method,
                    "rel_output_error": (num / den) ** 0.5,
                    "quantize_s": time.perf_counter() - t,
                }
            )
    for r in rows:
        rtn = next(x for x in rows if x["bits"] == r["bits"] and x["method"] == "rtn")
        r["error_vs_rtn"] = r["rel_output_error"] / rtn["rel_output_error"]
    return rows


def bench_lm(threads: list[int], repeats: int, agreement_steps: int, methods: list[str]) -> list[dict]:
    from reference_model.lm import Streamer, load_lm
    from reference_model.quant.evaluate import greedy_agreement
    from reference_model.quant.kv_cache import int8_window_cache_factory
    from reference_model.quant.models import quantize_lm

    torch.manual_seed(0)
    base = load_lm("tiny")
    variants = {"fp32": base}
    for bits in (8, 4):
        for method in methods:
            m = copy.deepcopy(base)
            quantize_lm(m, bits, method)
            variants[f"int{bits}-{method}"] = m
    if dynamic_int8_ok():  # the W8A8 peer of int8 on the same RTN codes
        m = copy.deepcopy(base)
        quantize_lm(m, 8, "rtn", kernel="dynamic")
        variants["int8-rtn:dynamic"] = m
    kv = copy.deepcopy(base)
    for a in kv.transformer.attentions():
        a.cache_factory = int8_window_cache_factory(16)
    variants["kv-compress=int8:16"] = kv
    rows = []
    codes = torch.randint(0, base.card, (1, base.n_q - base.dep_q, 1))
    for th in threads:
        torch.set_num_threads(th)
        streamers = {k: Streamer(m, temp=0, temp_text=0) for k, m in variants.items()}
        times = time_round_robin({k: (lambda s=s: s.step(codes)) for k, s in streamers.items()}, repeats, 3)
        for k, m in variants.items():
            rows.append(
                {
                    "threads": th,
                    "variant": k,
                    "step_ms": times[k] * 1e3,
                    "time_vs_fp32": times[k] / times["fp32"],
                    "weight_bytes": tensor_bytes(m),
                    "kv_bytes_full_context": streamers[k].kv_cache_bytes,
                }
            )
    torch.set_num_threads(1)
    for k, m in variants.items():
        if k == "fp32":
            continue
        a = greedy_agreement(base, m, steps=agreement_steps)
        for r in rows:
            if r["variant"] == k:
                r |= {"greedy_text_agree": a.text, "greedy_audio_agree": a.audio}
    return rows


def _print(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}", flush=True)
    if not rows:
        return
    keys = list(rows[0])
    for r in rows:
        keys += [k for k in r if k not in keys]
    print(" | ".join(keys))
    for r in rows:
        print(
            " | ".join(f"{r.get(k):.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys)
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and frames (a smoke run)")
    p.add_argument("--json", help="write the rows to this file")
    p.add_argument(
        "--only", choices=["stacks", "kernels", "methods", "lm"], action="append", help="run only these parts"
    )
    p.add_argument(
        "--preset",
        action="append",
        help="LM preset whose layer shapes --only kernels times (repeatable; default: tiny and moshi-7b)",
    )
    p.add_argument("--threads", default="1,2", help="torch threads of the stacks and lm parts (e.g. 1)")
    p.add_argument("--repeats", type=int, help="timed rounds per variant (default 7; --quick 3)")
    args = p.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    threads = [int(t) for t in args.threads.split(",")]
    parts = args.only or ["stacks", "kernels", "methods", "lm"]
    out: dict = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if "stacks" in parts:
        out["stacks"] = bench_stacks(threads, repeats)
        _print("linear stacks, batch 1 (one streaming step)", out["stacks"])
    if "kernels" in parts:
        presets = args.preset or ["tiny", "moshi-7b"]
        out["kernels"] = bench_kernels(presets, repeats)
        _print(
            f"every kernel per width, {', '.join(presets)} layer shapes, batch 1, 1 thread "
            "(chosen_by: the flag that runs it here)",
            out["kernels"],
        )
        out["kernel_summary"] = kernel_summary(out["kernels"])
        _print("per layer: what each flag runs, against fp32 and the fastest kernel of its width",
               out["kernel_summary"])  # fmt: skip
    if "methods" in parts:
        out["methods"] = bench_methods(frames=16 if args.quick else 64)
        _print("output error on held-out streaming activations, tiny LM temporal layers", out["methods"])
    if "lm" in parts:
        methods = ["rtn"] if args.quick else ["rtn", "gptq", "awq"]
        out["lm"] = bench_lm(threads, repeats, agreement_steps=8 if args.quick else 24, methods=methods)
        _print("tiny LM streaming step", out["lm"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

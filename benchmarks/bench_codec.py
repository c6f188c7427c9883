"""Per-frame streaming cost of our codec vs moshi's MimiModel, side by side in one process.

Same weights (moshi's random Mimi, copied into ours), same input frames, calls interleaved frame by
frame (moshi encode, ours encode, moshi decode, ours decode) so that load from other processes hits both
alike; medians over ``--frames`` frames after ``--warmup`` frames. Then the tiny preset alone.

    python benchmarks/bench_codec.py --frames 40 --threads 1,2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from reference_model.codec import CodecStreamer, load_codec


def _moshi_mimi():
    from moshi.models import loaders

    model = loaders.get_mimi(None, num_codebooks=8)
    with torch.no_grad():
        for name, buf in model.named_buffers():  # moshi's fresh codebooks are all zero: give them content
            if name.endswith("embedding_sum"):
                buf.copy_(torch.randn_like(buf))
            elif name.endswith("cluster_usage"):
                buf.fill_(1.0)
            elif name.endswith("_initialized"):
                buf.fill_(1.0)
    return model.eval()


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t) * 1e3


def bench_vs_moshi(frames: int, warmup: int, threads: int, wav: torch.Tensor) -> dict:
    from safetensors.torch import save_file

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ref = _moshi_mimi()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mimi.safetensors"
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
        ours = load_codec("mimi", path, num_codebooks=8)
    streamer = CodecStreamer(ours, 1)
    times: dict[str, list[float]] = {
        "moshi_encode": [],
        "ours_encode": [],
        "moshi_decode": [],
        "ours_decode": [],
    }
    max_diff = 0.0
    codes_equal = True
    with torch.no_grad(), ref.streaming(1):
        for f in range(warmup + frames):
            frame = wav[..., f * 1920 : (f + 1) * 1920]
            c_ref, t_me = _timed(lambda: ref.encode(frame))  # noqa: B023
            c_ours, t_oe = _timed(lambda: streamer.encode(frame))  # noqa: B023
            a_ref, t_md = _timed(lambda: ref.decode(c_ref))  # noqa: B023
            a_ours, t_od = _timed(lambda: streamer.decode(c_ref))  # noqa: B023
            codes_equal &= bool(torch.equal(c_ref, c_ours))
            max_diff = max(max_diff, float((a_ref - a_ours).abs().max()))
            if f >= warmup:
                for key, t in zip(times, (t_me, t_oe, t_md, t_od)):
                    times[key].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "config": "mimi",
        "threads": threads,
        "frames": frames,
        "median_ms": med,
        "encode_ratio_ours_over_moshi": med["ours_encode"] / med["moshi_encode"],
        "decode_ratio_ours_over_moshi": med["ours_decode"] / med["moshi_decode"],
        "codes_equal": codes_equal,
        "max_abs_audio_diff": max_diff,
    }


def bench_tiny(frames: int, warmup: int, threads: int, wav: torch.Tensor, num_codebooks: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    codec = load_codec("tiny", num_codebooks=num_codebooks)
    streamer = CodecStreamer(codec, 1)
    enc, dec = [], []
    for f in range(warmup + frames):
        frame = wav[..., f * 1920 : (f + 1) * 1920]
        codes, te = _timed(lambda: streamer.encode(frame))  # noqa: B023
        _, td = _timed(lambda: streamer.decode(codes))  # noqa: B023
        if f >= warmup:
            enc.append(te)
            dec.append(td)
    return {
        "config": "tiny",
        "threads": threads,
        "num_codebooks": num_codebooks,
        "weights": getattr(codec, "checkpoint", None) or "random",
        "median_ms": {"encode": statistics.median(enc), "decode": statistics.median(dec)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-moshi", action="store_true")
    args = parser.parse_args()
    if args.frames < 30:
        parser.error("--frames must be >= 30 for a stable median")
    torch.manual_seed(1234)
    wav = torch.randn(1, 1, 1920 * (args.frames + args.warmup)) * 0.1
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        if not args.skip_moshi:
            r = bench_vs_moshi(args.frames, args.warmup, threads, wav)
            m = r["median_ms"]
            print(
                f"mimi  threads={threads}  encode: moshi {m['moshi_encode']:.1f} ms, "
                f"ours {m['ours_encode']:.1f} ms "
                f"(x{r['encode_ratio_ours_over_moshi']:.2f})  decode: moshi {m['moshi_decode']:.1f} ms, "
                f"ours {m['ours_decode']:.1f} ms (x{r['decode_ratio_ours_over_moshi']:.2f})  "
                f"codes equal {r['codes_equal']}, max audio diff {r['max_abs_audio_diff']:.1e}",
                flush=True,
            )
            results.append(r)
        for n in (8, 32):
            r = bench_tiny(args.frames, args.warmup, threads, wav, n)
            m = r["median_ms"]
            print(
                f"tiny  threads={threads}  codebooks={n}  encode {m['encode']:.2f} ms  "
                f"decode {m['decode']:.2f} ms  "
                f"(weights: {Path(str(r['weights'])).name})",
                flush=True,
            )
            results.append(r)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"platform": platform.platform(), "torch": torch.__version__, "results": results}, indent=2
            )
        )


if __name__ == "__main__":
    main()

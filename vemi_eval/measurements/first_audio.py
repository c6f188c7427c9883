"""Measurement kind ``first_audio``: time until the first audio of a streamed codec round trip.

Held-out speech goes through the variant's codec frame by frame, as a live input would (``CodecStreamer``:
encode one 80 ms frame, decode whatever codes it gives). The first audio is the first decoded frame: it
needs ``input_frames_to_first_audio`` frames of input to have arrived (1 for a single-rate codec; W for a
multi-rate codec of code window W, whose coarse codes are known only when their window closes) and then
the compute of the frame that completes it (encode, and the decode of the first frame).
``first_audio_latency_ms`` = input frames x frame duration + that compute, measured per utterance.

What this is not: the latency of a *generating* model's speech. A model that emits codes itself can emit
a coarse code at the start of its window, so its first frame needs one token per level either way; a
multi-rate codec lowers the codes per second after that (the condition's ``bitrate_kbps``), not the
first frame's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..data.codec_roundtrip import bitrate_kbps, codebooks_in_use, level_strides, sweep_codebooks
from ..records import MetricRecord
from ..stats import bootstrap_ci
from . import MeasureContext, at_least, ints_at_least, measurement, merged_params
from .common import codec_of, load_data

PARAMS: dict[str, Any] = {
    "n_codebooks": [8],
    "max_utterances": 8,
    "split": "heldout",
    "max_input_s": 1800.0,
}

CLAIMS = {"first_audio_latency": [("first_audio_latency_ms", {})]}


@torch.no_grad()
def first_audio(codec, audio: np.ndarray, n: int) -> tuple[int, float]:
    """(input frames needed, compute ms after the last of them arrived) until the first decoded frame."""
    from reference_model import CodecStreamer

    fs = int(codec.frame_size)
    wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).view(1, 1, -1)
    wav = torch.nn.functional.pad(wav, (0, (-wav.shape[-1]) % fs))
    streamer = CodecStreamer(codec)
    for f in range(wav.shape[-1] // fs):
        t0 = time.perf_counter()
        codes = streamer.encode(wav[..., f * fs : (f + 1) * fs])
        if codes.shape[-1] > 0:
            streamer.decode(codes[:, :n, :1])
            return f + 1, (time.perf_counter() - t0) * 1000.0
    raise ValueError(f"no code came out of {wav.shape[-1] // fs} frames (the codec's window is longer)")


def check(p: dict[str, Any]) -> None:
    ints_at_least(p, "n_codebooks", 1)
    at_least(p, "max_utterances", 0)


# version 2: 16 and 32 codebooks are encoded and decoded as 16 and 32 (they were capped at the LM's 8)
@measurement("first_audio", params=PARAMS, version=2, claims=CLAIMS, check=check, data=True)
def measure_first_audio(ctx: MeasureContext) -> list[MetricRecord]:
    params = merged_params(ctx, PARAMS)
    codec = codec_of(ctx.variant.build())
    ds = load_data(ctx, int(codec.sample_rate), params)
    frame_ms = 1000.0 / float(codec.frame_rate)
    records = []
    for n in sweep_codebooks(codec, params["n_codebooks"]):
        frames, compute = [], []
        with codebooks_in_use(codec, n):  # encodes what it sends: the compute is n codebooks'
            for i, utt in enumerate(ds.utterances):
                ctx.progress(f"first_audio: n={n} {utt.id} ({i + 1}/{len(ds.utterances)})")
                f, ms = first_audio(codec, utt.audio, n)
                frames.append(f)
                compute.append(ms)
        latency = [f * frame_ms + ms for f, ms in zip(frames, compute, strict=True)]
        ctx.add_samples(
            {"utterance": u.id, "n_codebooks": n, "input_frames_to_first_audio": f, "compute_ms": ms}
            for u, f, ms in zip(ds.utterances, frames, compute, strict=True)
        )
        strides = level_strides(codec, n)
        # bitrate out of the condition: the single-rate baseline's differs at the same n, and the ratio
        # pairs records by condition
        cond = {"n_codebooks": n}
        common = dict(condition=cond, data={ds.name: ds.sha256}, higher_is_better=False)
        lo, hi = bootstrap_ci(latency, "mean", seed=ctx.seed)
        records += [
            MetricRecord(
                ctx.suite, ctx.variant.name, "first_audio_latency_ms", float(np.mean(latency)), "ms",
                len(latency), ci_low=lo, ci_high=hi, samples=latency, statistic="mean",
                extra={"frame_ms": frame_ms, "compute_ms_mean": float(np.mean(compute)),
                       "level_strides": list(strides), "bitrate_kbps": bitrate_kbps(codec, n)}, **common,
            ),
            MetricRecord(
                ctx.suite, ctx.variant.name, "input_frames_to_first_audio", float(np.mean(frames)), "frames",
                len(frames), samples=[float(f) for f in frames], statistic="mean", **common,
            ),
        ]  # fmt: skip
    return records

"""Measurement kind ``codebook_usage``: how much of each codebook the variant's codec uses on held-out speech.

Every utterance is encoded with the codebooks in use; per level (1 = the semantic codebook), the codes of
all frames are pooled into one histogram: its entropy (bits), perplexity (2^entropy: the number of equally
used codes it is worth) and the share of the codebook's codes that occur at all. The figure is pooled, not
a mean of per-utterance ones (a 3 s utterance has 37 frames, far fewer than a codebook has codes), and it
carries no interval: resampling utterances repeats some, which lowers a plug-in entropy so much that a
bootstrap interval lies beside the figure, not around it; the spread across training seeds is the
interval an experiment reads (no record here carries samples, so the replicates' values become them).
``codebook_perplexity_mean`` averages the levels 1..``levels``.

What ERVQ (3.3) claims to raise; the round-trip quality at equal bitrate is the ``codec`` kind's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..data.codec_roundtrip import encode, level_strides
from ..records import MetricRecord
from . import MeasureContext, at_least, measurement, merged_params
from .common import codec_of, load_data

PARAMS: dict[str, Any] = {
    "levels": 8,  # codebooks 1..levels (capped at the codec's number in use)
    "max_utterances": 0,  # 0: every utterance of the data
    "split": "heldout",
    "max_input_s": 1800.0,
}


def usage_figures(codes: np.ndarray, bins: int) -> tuple[float, float, float]:
    """(entropy in bits, perplexity, share of the ``bins`` codes used) of a flat array of codes."""
    counts = np.bincount(codes.reshape(-1), minlength=bins).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    h = float(-(p * np.log2(p)).sum())
    return h, float(2.0**h), float((counts > 0).sum() / bins)


def check(p: dict[str, Any]) -> None:
    at_least(p, "levels", 1)
    at_least(p, "max_utterances", 0)


@measurement(
    "codebook_usage", params=PARAMS, version=1, check=check, exact=("*",), data=True
)  # counts on fixed data
def measure_codebook_usage(ctx: MeasureContext) -> list[MetricRecord]:
    params = merged_params(ctx, PARAMS)
    codec = codec_of(ctx.variant.build())
    ds = load_data(ctx, int(codec.sample_rate), params)
    bins = int(codec.cardinality)
    levels = min(int(params["levels"]), int(codec.num_codebooks))
    strides = level_strides(codec, levels)
    per_level: list[list[np.ndarray]] = [[] for _ in range(levels)]
    for i, utt in enumerate(ds.utterances):
        ctx.progress(f"codebook_usage: {utt.id} ({i + 1}/{len(ds.utterances)})")
        codes = encode(codec, utt.audio)[0].cpu().numpy()
        for k, stride in enumerate(strides):
            per_level[k].append(codes[k, ::stride])  # a multi-rate level's code once per window
    data = {ds.name: ds.sha256}
    records: list[MetricRecord] = []
    perplexities = []
    names = (
        ("codebook_entropy_bits", "bits"),
        ("codebook_perplexity", "codes"),
        ("codes_used_share", "share"),
    )
    for k in range(levels):
        flat = np.concatenate(per_level[k])
        figures = usage_figures(flat, bins)
        perplexities.append(figures[1])
        ctx.add_samples(
            [
                {"level": k + 1, "utterance": u.id, "frames": int(c.size)}
                for u, c in zip(ds.utterances, per_level[k])
            ]
        )
        for which, (metric, unit) in enumerate(names):
            records.append(
                MetricRecord(
                    ctx.suite, ctx.variant.name, metric, figures[which], unit, int(flat.size),
                    condition={"level": k + 1, "bins": bins}, higher_is_better=True,
                    statistic="pooled over frames", data=data,
                    extra={"utterances": len(ds.utterances), "max_entropy_bits": math.log2(bins)},
                )
            )  # fmt: skip
    records.append(
        MetricRecord(
            ctx.suite, ctx.variant.name, "codebook_perplexity_mean", float(np.mean(perplexities)), "codes",
            levels, condition={"levels": levels, "bins": bins}, higher_is_better=True, statistic="mean",
            data=data, extra={"utterances": len(ds.utterances), "per_level": perplexities},
        )
    )  # fmt: skip
    return records

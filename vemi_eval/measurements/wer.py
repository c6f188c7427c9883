"""Measurement kind ``wer``: intelligibility lost in the codec round trip, as ASR error rates.

The same ASR (and the same text normalisation) transcribes the original utterance and its round trip
through the variant's codec (offline, ``n_codebooks`` codebooks; 0 = every codebook in use). Records:
``wer``/``cer`` with condition {"stage": "original" | "roundtrip"} and ``wer_delta_points`` /
``cer_delta_points`` = 100 x (round trip - original), with a paired bootstrap interval over utterances.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.codec_roundtrip import bitrate_kbps, decode, encode
from ..evaluators.scoring import records_from_rows
from ..records import FAILED, OK, MetricRecord
from . import MeasureContext, at_least, measurement
from .common import open_codec

PARAMS: dict[str, Any] = {
    "n_codebooks": 0,
    "max_utterances": 0,
    "split": "heldout",
    "asr_model": "",
    "beam_size": 5,
    "max_input_s": 1800.0,  # longer inputs are skipped by name
}


def paired_delta_ci(orig: list[dict], rt: list[dict], seed: int, n_boot: int = 2000):
    """100 x (WER_rt - WER_orig) over the utterances both scored, with a paired bootstrap interval."""
    a = {r["utt"]: r for r in orig if r["status"] == OK}
    b = {r["utt"]: r for r in rt if r["status"] == OK}
    ids = [u for u in a if u in b]
    if not ids:
        return None
    e0 = np.array([a[u]["errors"] for u in ids], float)
    e1 = np.array([b[u]["errors"] for u in ids], float)
    tot = np.array([a[u]["total"] for u in ids], float)
    value = 100 * (e1.sum() - e0.sum()) / tot.sum()
    if len(ids) < 2:
        return value, value, value, len(ids)
    idx = np.random.default_rng(seed).integers(0, len(ids), size=(n_boot, len(ids)))
    dist = 100 * (e1[idx].sum(1) - e0[idx].sum(1)) / tot[idx].sum(1)
    lo, hi = np.quantile(dist, [0.025, 0.975])
    return float(value), float(lo), float(hi), len(ids)


# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "quality": [("wer*", {})],
}


# values a run cannot use, refused by the suite loader before any work
def check(p: dict[str, Any]) -> None:
    for key, low in (("n_codebooks", 0), ("max_utterances", 0), ("beam_size", 1)):
        at_least(p, key, low)


@measurement(
    "wer", params=PARAMS, version=1, claims=CLAIMS, check=check, exact=("*",), data=True, per_input=True
)
def measure_wer(ctx: MeasureContext) -> list[MetricRecord]:
    run = open_codec(ctx, PARAMS)
    params, codec, ds = run.params, run.codec, run.data
    scorer = run.scorer(["wer", "cer"])
    n = int(params["n_codebooks"]) or int(codec.num_codebooks)
    n = min(n, int(codec.num_codebooks))
    codec_cond = {"n_codebooks": n, "bitrate_kbps": bitrate_kbps(codec, n)}
    rows = {"original": [], "roundtrip": []}
    for i, utt in enumerate(ds.utterances):
        ctx.progress(f"wer: {utt.id} ({i + 1}/{len(ds.utterances)})")
        rows["original"] += scorer.score(utt, utt.audio, {"stage": "original"})
        out = decode(codec, encode(codec, utt.audio), n, utt.audio.size)
        rows["roundtrip"] += scorer.score(utt, out, {"stage": "roundtrip", **codec_cond})
    records: list[MetricRecord] = []
    data_hash = {ds.name: ds.sha256}
    for stage, rr in rows.items():
        cond = {"stage": stage} if stage == "original" else {"stage": stage, **codec_cond}
        records += records_from_rows(ctx, rr, condition=cond, data_hash=data_hash, skipped_items=ds.skipped)
        ctx.add_samples(rr)
    for metric in ("wer", "cer"):
        orig = [r for r in rows["original"] if r["metric"] == metric]
        rt = [r for r in rows["roundtrip"] if r["metric"] == metric]
        got = paired_delta_ci(orig, rt, ctx.seed)
        extra: dict[str, Any] = {"of": len(orig) + len(ds.skipped)}
        base = dict(
            suite=ctx.suite,
            variant=ctx.variant.name,
            metric=f"{metric}_delta_points",
            unit="points",
            condition=codec_cond,
            higher_is_better=False,
            data=data_hash,
        )
        if got is None:
            reason = "no utterance was scored both before and after the round trip"
            records.append(MetricRecord(value=None, n=0, status=FAILED, reason=reason, extra=extra, **base))
            continue
        value, lo, hi, k = got
        extra.update(scored=k, scored_text=f"scored {k} of {extra['of']}")
        records.append(
            MetricRecord(
                value=value, n=k, ci_low=lo, ci_high=hi, statistic="paired difference", extra=extra, **base
            )
        )
    return records

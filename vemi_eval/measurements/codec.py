"""Measurement kind ``codec``: round-trip quality of the variant's codec against the number of codebooks.

Each utterance is encoded once offline with every codebook in use, then decoded from its first n
codebooks (residual VQ: the first n codes are what an n-codebook encoder gives) and scored against the
input with the chosen evaluators. Condition: {"n_codebooks": n, "bitrate_kbps": n x log2(bins) x frame
rate / 1000} (the round trip: vemi_eval/data/codec_roundtrip.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.byo import Dataset
from ..data.codec_roundtrip import bitrate_kbps, codebooks_in_use, decode, encode, sent_kbps, sweep_codebooks
from ..evaluators.scoring import DEFAULT_METRICS, Scorer, check_metrics, records_from_rows
from ..records import FAILED, SKIPPED, MetricRecord
from ..yardsticks import REFERENCE_CODECS, YardstickError, check_names
from . import MeasureContext, at_least, ints_at_least, measurement
from .common import annotated, open_codec

PARAMS: dict[str, Any] = {
    "n_codebooks": [2, 4, 8],  # decode from the first n codebooks (capped at the codec's maximum)
    "metrics": list(DEFAULT_METRICS),
    "max_utterances": 0,  # 0: every utterance of the data
    "split": "heldout",  # corpus split when no data directory is given
    "asr_model": "",  # local faster-whisper folder; "" = the bundled tiny.en
    "beam_size": 5,
    "max_input_s": 1800.0,  # longer inputs are skipped by name (memory and time stay bounded)
    # reference codecs (vemi_eval/yardsticks.py) scored on the same utterances, on the baseline variant only:
    # rows with condition reference_codec, never a variant of the model
    "references": [],
}


# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "codec_quality": [("pesq*", {}), ("stoi*", {}), ("estoi*", {}), ("si_sdr*", {})],
    "naturalness": [("dnsmos*", {})],
    "quality": [("pesq*", {}), ("dnsmos*", {})],
}


# values a run cannot use, refused by the suite loader before any work
def check(p: dict[str, Any]) -> None:
    ints_at_least(p, "n_codebooks", 1)
    check_metrics(p["metrics"])
    at_least(p, "max_utterances", 0)
    at_least(p, "beam_size", 1)
    if not isinstance(p["references"], list):
        raise ValueError(f"references must be a list of names, got {p['references']!r}")
    check_names(p["references"])


# version 2: STOI, ESTOI and SI-SDR are taken at the lag of log-energy envelopes (evaluators.scoring.align),
# not at the waveform cross-correlation's peak, which lay anywhere for a phase-free decoder (session 17).
# 3: 16 and 32 codebooks are decoded from 16 and 32 (they were capped at the 8 the codec encodes for the LM,
# so their rows repeated the 8-codebook row).
@measurement(
    "codec", params=PARAMS, version=3, claims=CLAIMS, check=check, exact=("*",), data=True, per_input=True
)
def measure_codec(ctx: MeasureContext) -> list[MetricRecord]:
    run = open_codec(ctx, PARAMS)
    params, codec, sr, ds = run.params, run.codec, run.sample_rate, run.data
    scorer = run.scorer()
    ns = sweep_codebooks(codec, params["n_codebooks"])
    rows_by_n: dict[int, list[dict]] = {n: [] for n in ns}
    sent: dict[int, list[float]] = {n: [] for n in ns}
    with codebooks_in_use(codec, max(ns)):
        for i, utt in enumerate(ds.utterances):
            ctx.progress(f"codec: {utt.id} ({i + 1}/{len(ds.utterances)})")
            codes = encode(codec, utt.audio)
            for n in ns:
                cond = {"n_codebooks": n, "bitrate_kbps": bitrate_kbps(codec, n)}
                rows_by_n[n] += scorer.score(utt, decode(codec, codes, n, utt.audio.size), cond)
                sent[n].append(sent_kbps(codec, codes[:, :n]))
    records = []
    for n in ns:
        cond = {"n_codebooks": n, "bitrate_kbps": bitrate_kbps(codec, n)}
        recs = records_from_rows(
            ctx, rows_by_n[n], condition=cond, data_hash={ds.name: ds.sha256}, skipped_items=ds.skipped
        )
        records += recs
        ctx.add_samples(rows_by_n[n])
        records.append(
            MetricRecord(
                ctx.suite,
                ctx.variant.name,
                "sent_bitrate_kbps",
                float(np.mean(sent[n])),
                "kbps",
                len(sent[n]),
                condition=cond,
                higher_is_better=False,
                statistic="mean",
                samples=sent[n],
                data={ds.name: ds.sha256},
            )
        )
    if params["references"] and ctx.variant.name == ctx.baseline.name:
        records += reference_records(ctx, params["references"], ds, scorer, sr)
    return annotated(records, scorer, codec, ds)


def reference_records(ctx: MeasureContext, names: list[str], ds: Dataset, scorer: Scorer, sr: int) -> list:
    """The yardsticks' rows: each reference codec's round trip of every utterance, scored like the model's
    codec; a codec whose tool is missing gives one skipped record per metric, with the reason."""
    from ..yardsticks import roundtrip

    records: list[MetricRecord] = []
    for name in names:
        ref = REFERENCE_CODECS[name]
        cond = {"reference_codec": name, "bitrate_kbps": ref.bitrate_kbps}
        facts = {"reference": True, "tool": f"{ref.package} {ref.version()}"}
        missing = ref.missing()
        if missing:
            for metric in scorer.metrics:
                records.append(MetricRecord(ctx.suite, ctx.variant.name, metric, None, "", 0, status=SKIPPED,
                                            reason=missing, condition=cond, extra=dict(facts)))  # fmt: skip
            continue
        rows: list[dict] = []
        lags = []
        for i, utt in enumerate(ds.utterances):
            ctx.progress(f"codec: reference {name} {utt.id} ({i + 1}/{len(ds.utterances)})")
            try:
                out, lag = roundtrip(ref, utt.audio, sr)
            except YardstickError as e:  # that utterance fails for every metric, with the tool's message
                rows += [{"utt": utt.id, "speaker": utt.speaker, **cond, "metric": m, "value": None,
                          "status": FAILED, "reason": str(e)} for m in scorer.metrics]  # fmt: skip
                continue
            lags.append(lag)
            rows += scorer.score(utt, out, cond)
        recs = records_from_rows(
            ctx, rows, condition=cond, data_hash={ds.name: ds.sha256}, skipped_items=ds.skipped
        )
        for r in recs:
            r.extra.update(facts, delay_removed_samples=sorted(set(lags)))
        records += recs
        ctx.add_samples(rows)
    return records

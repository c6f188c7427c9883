"""Measurement kind ``speaker``: does the codec keep the speaker's voice?

- ``speaker_similarity`` per speaker (condition {"speaker": s}) and over all utterances: cosine of
  resemblyzer embeddings of the round-tripped output and of the input;
- drift along a long streamed session: one speaker's utterances concatenated (``session_utterances`` of
  them), streamed through the variant's CodecStreamer frame by frame (80 ms), the output cut into
  ``window_s`` windows, each compared with the same window of the input: ``streamed_speaker_similarity``
  vs {"position_s"}, plus the least-squares slope ``speaker_similarity_drift_per_min``;
- speaker-verification EER over the data's speakers: enrolment = an original utterance, test = another
  utterance (original, or round-tripped), every pair; condition {"stage": "original" | "roundtrip"}.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.codec_roundtrip import roundtrip
from ..evaluators import EvaluatorError, all_specs
from ..evaluators import speaker as spk
from ..evaluators.scoring import records_from_rows
from ..records import FAILED, SKIPPED, MetricRecord
from . import MeasureContext, at_least, measurement
from .common import open_codec

PARAMS: dict[str, Any] = {
    "n_codebooks": 0,  # 0: every codebook in use
    "max_utterances": 0,
    "split": "heldout",
    "session_speakers": 1,  # how many speakers get a long streamed session
    "session_utterances": 12,  # utterances concatenated into one session
    "window_s": 3.0,
    "max_input_s": 1800.0,  # longer inputs are skipped by name
}


@torch.no_grad()
def stream_through(model, audio: np.ndarray) -> np.ndarray:
    """Encode and decode ``audio`` frame by frame with the variant's CodecStreamer (batch item 0)."""
    cs = model.codec_streamer
    cs.reset()
    fs = int(model.frame_size)
    b = int(getattr(cs, "batch_size", 1))
    n_frames = -(-audio.size // fs)
    x = np.zeros(n_frames * fs, dtype=np.float32)
    x[: audio.size] = audio
    dev = getattr(model, "device", "cpu")
    out = []
    for i in range(n_frames):
        frame = (
            torch.from_numpy(x[i * fs : (i + 1) * fs]).view(1, 1, fs).expand(b, 1, fs).contiguous().to(dev)
        )
        out.append(cs.decode(cs.encode(frame))[0, 0].float().cpu().numpy())
    cs.reset()
    return np.concatenate(out)[: audio.size]


def drift_slope_per_min(positions: list[float], sims: list[float]) -> float:
    if len(positions) < 2:
        raise EvaluatorError("drift needs at least two windows")
    slope = np.polyfit(np.asarray(positions), np.asarray(sims), 1)[0]
    return float(slope * 60.0)


def eer_record(
    ctx, stage: str, enrol: dict, tests: dict, speakers: dict, extra: dict, facts: dict
) -> MetricRecord:
    """EER of every (enrolment utterance, other test utterance) pair."""
    scores, same = [], []
    for a, ea in enrol.items():
        for b, eb in tests.items():
            if a != b:
                scores.append(spk.similarity(ea, eb))
                same.append(speakers[a] == speakers[b])
    base = dict(
        suite=ctx.suite,
        variant=ctx.variant.name,
        metric="speaker_eer",
        unit="fraction",
        condition={"stage": stage},
        higher_is_better=False,
        **facts,  # evaluator, data
    )
    try:
        value, threshold = spk.eer(np.array(scores), np.array(same))
    except EvaluatorError as e:
        return MetricRecord(value=None, n=0, status=SKIPPED, reason=str(e), extra=dict(extra), **base)
    ex = {**extra, "trials": len(scores), "target_trials": int(np.sum(same)), "threshold": threshold}
    return MetricRecord(value=value, n=len(scores), extra=ex, **base)


# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "speaker_similarity": [("speaker_similarity", {})],  # not the drift records (speaker_similarity_drift*)
}


# values a run cannot use, refused by the suite loader before any work
def check(p: dict[str, Any]) -> None:
    for key, low in (("n_codebooks", 0), ("max_utterances", 0), ("session_speakers", 1)):
        at_least(p, key, low)
    at_least(p, "session_utterances", 1)
    at_least(p, "window_s", 1e-9)


@measurement("speaker", params=PARAMS, version=1, claims=CLAIMS, check=check, exact=("*",), data=True)
def measure_speaker(ctx: MeasureContext) -> list[MetricRecord]:
    run = open_codec(ctx, PARAMS)
    params, model, codec, sr, ds = run.params, run.model, run.codec, run.sample_rate, run.data
    scorer = run.scorer(["speaker_similarity"])
    n = min(int(params["n_codebooks"]) or int(codec.num_codebooks), int(codec.num_codebooks))
    data_hash = {ds.name: ds.sha256}
    ev = {"name": "speaker", **all_specs()["speaker"].info()}
    records: list[MetricRecord] = []

    # 1) similarity of the round trip, per speaker and overall
    rows, outputs = [], {}
    for i, utt in enumerate(ds.utterances):
        ctx.progress(f"speaker: {utt.id} ({i + 1}/{len(ds.utterances)})")
        outputs[utt.id] = roundtrip(codec, utt.audio, n)
        rows += scorer.score(utt, outputs[utt.id], {"n_codebooks": n})
    ctx.add_samples(rows)
    records += records_from_rows(  # "scored N of M" counts the inputs the data refused, too
        ctx, rows, condition={"n_codebooks": n}, data_hash=data_hash, skipped_items=ds.skipped
    )
    for s in sorted({u.speaker for u in ds.utterances if u.speaker is not None}):
        mine = [r for r in rows if r["speaker"] == s]
        records += records_from_rows(
            ctx, mine, condition={"speaker": s, "n_codebooks": n}, data_hash=data_hash
        )

    # 2) drift along long streamed sessions
    by_spk: dict[str, list] = {}
    for u in ds.utterances:
        if u.speaker is not None:
            by_spk.setdefault(u.speaker, []).append(u)
    window = int(float(params["window_s"]) * sr)
    drift_rows = []
    for s in sorted(by_spk)[: int(params["session_speakers"])]:
        utts = by_spk[s][: int(params["session_utterances"])]
        session = np.concatenate([u.audio for u in utts])
        ctx.progress(f"speaker: streaming a {session.size / sr:.0f} s session of {s}")
        out = stream_through(model, session)
        for start in range(0, session.size - window + 1, window):
            pos = round(start / sr, 3)
            row = {"speaker": s, "metric": "streamed_speaker_similarity", "position_s": pos}
            try:
                e_in = spk.embed(session[start : start + window], sr)
                e_out = spk.embed(out[start : start + window], sr)
                drift_rows.append({**row, "value": spk.similarity(e_in, e_out), "status": "ok", "reason": ""})
            except EvaluatorError as e:
                drift_rows.append({**row, "value": None, "status": FAILED, "reason": str(e)})
    ctx.add_samples(drift_rows)
    ok = [r for r in drift_rows if r["status"] == "ok"]
    for r in drift_rows:
        base = dict(
            suite=ctx.suite,
            variant=ctx.variant.name,
            metric=r["metric"],
            unit="cosine",
            higher_is_better=True,
            condition={"speaker": r["speaker"], "position_s": r["position_s"]},
            evaluator=ev,
            data=data_hash,
        )
        extra = {"window_s": float(params["window_s"]), "streamed": True}
        if r["status"] == "ok":
            records.append(MetricRecord(value=r["value"], n=1, extra=extra, **base))
        else:
            records.append(
                MetricRecord(value=None, n=0, status=FAILED, reason=r["reason"], extra=extra, **base)
            )
    for s in sorted({r["speaker"] for r in drift_rows}):
        mine = [r for r in ok if r["speaker"] == s]
        base = dict(
            suite=ctx.suite,
            variant=ctx.variant.name,
            metric="speaker_similarity_drift_per_min",
            unit="cosine/min",
            higher_is_better=None,
            condition={"speaker": s},
            evaluator=ev,
            data=data_hash,
        )
        extra = {"windows": len(mine), "of": len(drift_rows)}
        try:
            slope = drift_slope_per_min([r["position_s"] for r in mine], [r["value"] for r in mine])
            records.append(MetricRecord(value=slope, n=len(mine), extra=extra, **base))
        except EvaluatorError as e:
            records.append(MetricRecord(value=None, n=0, status=FAILED, reason=str(e), extra=extra, **base))
    if not by_spk:
        records.append(
            MetricRecord(
                ctx.suite,
                ctx.variant.name,
                "streamed_speaker_similarity",
                None,
                "cosine",
                0,
                status=SKIPPED,
                reason="the data has no speaker labels",
                data=data_hash,
            )
        )

    # 3) speaker-verification EER, original and round trip
    labelled = [u for u in ds.utterances if u.speaker is not None]
    enrol, tests_rt, speakers = {}, {}, {}
    failures = []
    for u in labelled:
        try:
            enrol[u.id] = scorer.reference_embedding(u)
            tests_rt[u.id] = spk.embed(outputs[u.id], sr)
            speakers[u.id] = u.speaker
        except EvaluatorError as e:
            failures.append(f"{u.id}: {e}")
    extra = {"failures": failures[:5], "speakers": len(set(speakers.values()))}
    facts = {"evaluator": ev, "data": data_hash}
    records.append(eer_record(ctx, "original", enrol, enrol, speakers, extra, facts))
    rt_extra = {**extra, "n_codebooks": n}
    records.append(eer_record(ctx, "roundtrip", enrol, tests_rt, speakers, rt_extra, facts))
    return records

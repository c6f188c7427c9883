"""Measurement kind ``codec``: round-trip quality of the variant's codec against the number of codebooks.

Each utterance is encoded once offline with every codebook in use, then decoded from its first n
codebooks (residual VQ: the first n codes are what an n-codebook encoder gives) and scored against the
input with the chosen evaluators. Condition: {"n_codebooks": n, "bitrate_kbps": n x log2(bins) x frame
rate / 1000}. Also shared here: the data and round-trip helpers the wer/speaker/noise kinds use.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..data.byo import Dataset, dataset_for
from ..errors import DataError
from ..evaluators.scoring import DEFAULT_METRICS, Scorer, check_metrics, records_from_rows
from ..records import FAILED, SKIPPED, MetricRecord
from ..yardsticks import REFERENCE_CODECS, YardstickError, check_names
from . import MeasureContext, at_least, ints_at_least, measurement, merged_params

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


def load_data(ctx: MeasureContext, sample_rate: int, params: dict[str, Any]) -> Dataset:
    """The suite's data (BYO directory or espeak corpus), at the codec's rate, capped at max_utterances."""
    ds = dataset_for(
        ctx.data,
        sample_rate=sample_rate,
        quick=ctx.quick,
        split=params.get("split", "heldout"),
        report=ctx.progress,
    )
    limit_s = float(params.get("max_input_s", MAX_INPUT_S))
    keep = []
    for u in ds.utterances:
        seconds = u.audio.size / float(sample_rate)
        if seconds > limit_s:
            ds.skipped.append((u.id, f"{seconds:.0f} s is longer than max_input_s = {limit_s:g}"))
        else:
            keep.append(u)
    ds.utterances = keep
    if not keep:
        raise DataError(f"no input of {ds.name} is at most max_input_s = {limit_s:g} s long")
    for name, why in ds.skipped:
        ctx.skip_input(name, why)
    cap = int(params.get("max_utterances") or 0)
    if cap and len(ds.utterances) > cap:
        ds.utterances = spread_over_speakers(ds.utterances, cap)
    return ds


def spread_over_speakers(utts: list, n: int) -> list:
    """n utterances taken round-robin over speakers (a cut of a speaker-sorted list would keep one)."""
    groups: dict[Any, list] = {}
    for u in utts:
        groups.setdefault(u.speaker, []).append(u)
    out, i = [], 0
    while len(out) < n:
        for g in groups.values():
            if i < len(g) and len(out) < n:
                out.append(g[i])
        i += 1
    return out


def make_scorer(params: dict[str, Any], sample_rate: int, metrics: list[str] | None = None) -> Scorer:
    return Scorer(
        metrics=check_metrics(metrics if metrics is not None else params["metrics"]),
        sample_rate=sample_rate,
        asr_model=params.get("asr_model") or None,
        beam_size=int(params.get("beam_size", 5)),
        threads=max(1, torch.get_num_threads()),
    )


def codec_of(model) -> Any:
    return model.codec


def level_strides(codec, n: int) -> tuple[int, ...]:
    """Frames per code of the first n codebooks: a multi-rate codec's coarse levels send one code per
    window of frames (its codes repeat over the window); 1 for every level of a single-rate codec."""
    strides = tuple(getattr(getattr(codec, "quantizer", None), "level_strides", ()) or ())
    return (strides + (1,) * n)[:n]


def bitrate_kbps(codec, n: int) -> float:
    """Bits per second of the first n codebooks, each level counted at its own rate."""
    codes_per_frame = sum(1.0 / s for s in level_strides(codec, n))
    return round(codes_per_frame * math.log2(int(codec.cardinality)) * float(codec.frame_rate) / 1000, 4)


def sent_kbps(codec, codes: torch.Tensor) -> float:
    """Bitrate actually carried by ``codes``: codebooks marked -1 (not sent, dynamic bitrate) cost nothing;
    a multi-rate level's code is sent once per window of its stride."""
    weights = torch.tensor([1.0 / s for s in level_strides(codec, codes.shape[1])], device=codes.device)
    sent = float(((codes >= 0).float().sum(dim=(0, 2)) * weights).sum())
    seconds = codes.shape[-1] / float(codec.frame_rate)
    return sent * math.log2(int(codec.cardinality)) / seconds / 1000


# Inputs longer than this go through the codec frame by frame (its streaming state, which gives the codes
# of the offline pass): an offline pass holds every layer's activations for the whole input (about 4.8 GB
# for 600 s), a streamed one a frame's worth.
STREAM_ABOVE_S = 60.0
MAX_INPUT_S = 1800.0  # the default of max_input_s: longer inputs are skipped by name


def streams(codec, n_samples: int) -> bool:
    """Stream this input? Only a plain streaming codec: a variant that replaces encode or decode on the
    instance (dynamic bitrate) runs offline, as its change lives in those methods."""
    plain = hasattr(codec, "new_encoder_state") and not {"encode", "decode"} & set(vars(codec))
    return plain and n_samples > STREAM_ABOVE_S * float(codec.sample_rate)


def _device(codec) -> Any:
    return next(iter(codec.parameters()), torch.zeros(())).device if hasattr(codec, "parameters") else "cpu"


@torch.no_grad()
def encode(codec, audio: np.ndarray) -> torch.Tensor:
    """Codes [1, num_codebooks, frames] of one utterance (offline, or streamed when it is long)."""
    wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).view(1, 1, -1).to(_device(codec))
    if not streams(codec, wav.shape[-1]):
        return codec.encode(wav)
    from reference_model import CodecStreamer

    fs = int(codec.frame_size)
    wav = torch.nn.functional.pad(wav, (0, (-wav.shape[-1]) % fs))  # whole frames, as offline
    streamer = CodecStreamer(codec)
    codes = [streamer.encode(wav[..., i : i + fs]) for i in range(0, wav.shape[-1], fs)]
    return torch.cat(codes + [streamer.flush()], dim=-1)  # flush: a multi-rate codec's last window


@torch.no_grad()
def decode(codec, codes: torch.Tensor, n: int, length: int) -> np.ndarray:
    """Waveform from the first n codebooks, cut to the input length (the codec pads to whole frames)."""
    if not streams(codec, length):
        return codec.decode(codes[:, :n])[0, 0, :length].float().cpu().numpy()
    from reference_model import CodecStreamer

    streamer = CodecStreamer(codec)
    fs, delay = int(codec.frame_size), int(getattr(codec, "decode_delay", 0))
    out = np.empty(codes.shape[-1] * fs + delay, dtype=np.float32)
    for f in range(codes.shape[-1]):
        out[f * fs : (f + 1) * fs] = streamer.decode(codes[:, :n, f : f + 1])[0, 0].float().cpu().numpy()
    out[codes.shape[-1] * fs :] = streamer.decode_tail()[0, 0].float().cpu().numpy()
    return out[delay : delay + length]  # a delayed decoder's stream, aligned with the input as offline


def annotated(records: list[MetricRecord], scorer: Scorer, codec, ds: Dataset) -> list[MetricRecord]:
    """The records with the evaluators' time per call and, when there were long inputs, which ones went
    through the codec streamed."""
    timing = scorer.timings_ms()
    long = [u.id for u in ds.utterances if streams(codec, u.audio.size)]
    for r in records:
        r.extra["evaluator_ms_per_call"] = timing
        if long:
            r.extra.update(streamed_inputs=long, streamed_above_s=STREAM_ABOVE_S)
    return records


def roundtrip(codec, audio: np.ndarray, n: int | None = None) -> np.ndarray:
    codes = encode(codec, audio)
    return decode(codec, codes, n or codes.shape[1], audio.size)


def sweep_codebooks(codec, requested: list[int]) -> list[int]:
    top = int(codec.num_codebooks)
    return sorted({min(int(n), top) for n in requested if int(n) >= 1})


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


@measurement(
    "codec", params=PARAMS, version=1, claims=CLAIMS, check=check, exact=("*",), data=True, per_input=True
)
def measure_codec(ctx: MeasureContext) -> list[MetricRecord]:
    params = merged_params(ctx, PARAMS)
    model = ctx.variant.build()
    codec = codec_of(model)
    sr = int(codec.sample_rate)
    ds = load_data(ctx, sr, params)
    scorer = make_scorer(params, sr)
    ns = sweep_codebooks(codec, params["n_codebooks"])
    rows_by_n: dict[int, list[dict]] = {n: [] for n in ns}
    sent: dict[int, list[float]] = {n: [] for n in ns}
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

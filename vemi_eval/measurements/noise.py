"""Measurement kind ``noise``: robustness of the codec round trip to noise and reverberation.

For every noise type and every SNR of the ladder, noise is mixed into each clean utterance at that exact
SNR (active-speech power, see ``vemi_eval.data.noise``), and the chosen metrics are computed against the
CLEAN utterance for:
  stage "input":     the noisy input itself (what any system starts from),
  stage "roundtrip": the noisy input after the variant's codec (offline, every codebook in use).
Reverberation uses the RT60 ladder instead (condition {"noise": "reverb", "rt60_s": t}).
Token stability: the share of semantic (first codebook) tokens of the noisy input equal to those of the
clean input, frame by frame (``semantic_token_stability``), and the same over every codebook in use.
One noise draw per (utterance, noise type) is scaled along the ladder, so SNR is the only thing that moves.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..data.codec_roundtrip import decode, encode
from ..data.corpus import espeak_corpus
from ..data.noise import DEFAULT_SNR_LADDER, NOISE_TYPES, make_noise, mix_at_snr, reverberate
from ..evaluators.scoring import records_from_rows
from ..records import MetricRecord
from . import MeasureContext, at_least, measurement
from .common import annotated, open_codec

PARAMS: dict[str, Any] = {
    "noise_types": list(NOISE_TYPES),
    "snr_db": list(DEFAULT_SNR_LADDER),
    "reverb_rt60_s": [0.3, 0.6, 1.0],  # [] to skip reverberation
    "stages": ["input", "roundtrip"],
    "metrics": ["pesq_wb", "stoi", "estoi", "si_sdr", "dnsmos_ovrl", "speaker_similarity", "wer"],
    "max_utterances": 0,
    "split": "heldout",
    "asr_model": "",
    "beam_size": 5,
    "mains_hz": 50.0,
    "max_input_s": 1800.0,  # longer inputs are skipped by name
}
STAGES = ("input", "roundtrip")


def noise_seed(seed: int, *parts: str) -> int:
    h = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(h[:4], "little")


def babble_talkers(sample_rate: int, n: int = 4) -> list[np.ndarray]:
    """Babble sources: one utterance from each of ``n`` training speakers (never a held-out one)."""
    seen: dict[str, np.ndarray] = {}
    for u in espeak_corpus("train", quick=True, sample_rate=sample_rate):
        if u.speaker not in seen:
            seen[u.speaker] = u.audio
        if len(seen) == n:
            break
    return list(seen.values())


def token_stability(clean_codes, noisy_codes) -> tuple[float, float]:
    """(share of equal semantic tokens, share of equal tokens over every codebook)."""
    c = clean_codes[0].cpu().numpy()
    d = noisy_codes[0].cpu().numpy()
    f = min(c.shape[-1], d.shape[-1])
    return float(np.mean(c[0, :f] == d[0, :f])), float(np.mean(c[:, :f] == d[:, :f]))


# the records of this kind that stand for the enhancement registry's claim metrics
CLAIMS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "wer_noisy": [("wer*", {"snr_db": "*"})],
}


# values a run cannot use, refused by the suite loader before any work
def check(p: dict[str, Any]) -> None:
    from ..evaluators.scoring import check_metrics

    check_metrics(p["metrics"])
    at_least(p, "max_utterances", 0)
    at_least(p, "beam_size", 1)
    bad = [s for s in p["stages"] if s not in STAGES]
    if bad:
        raise ValueError(f"unknown stage(s) {bad} (known: {', '.join(STAGES)})")


# version 2: STOI, ESTOI and SI-SDR aligned on log-energy envelopes (evaluators.scoring.align, session 17)
@measurement(
    "noise", params=PARAMS, version=2, claims=CLAIMS, check=check, exact=("*",), data=True, per_input=True
)
def measure_noise(ctx: MeasureContext) -> list[MetricRecord]:
    run = open_codec(ctx, PARAMS)
    params, codec, sr, ds = run.params, run.codec, run.sample_rate, run.data
    stages = list(params["stages"])
    scorer = run.scorer()
    talkers = babble_talkers(sr) if "babble" in params["noise_types"] else []
    conditions: list[dict[str, Any]] = [
        {"noise": t, "snr_db": float(s)} for t in params["noise_types"] for s in params["snr_db"]
    ]
    conditions += [{"noise": "reverb", "rt60_s": float(t)} for t in params["reverb_rt60_s"]]
    rows: dict[tuple, list[dict]] = {}
    tok_rows: dict[tuple, list[dict]] = {}
    distinct: list[int] = []  # distinct semantic tokens per clean utterance (a collapsed codebook is stable)
    for i, utt in enumerate(ds.utterances):
        ctx.progress(f"noise: {utt.id} ({i + 1}/{len(ds.utterances)})")
        clean_codes = encode(codec, utt.audio)
        distinct.append(len(set(clean_codes[0, 0].tolist())))
        noises = {}
        for cond in conditions:
            kind = cond["noise"]
            seed = noise_seed(ctx.seed, kind, utt.id)
            if kind == "reverb":
                noisy = reverberate(utt.audio, cond["rt60_s"], sr, seed)
            else:
                if kind not in noises:
                    noises[kind] = make_noise(
                        kind, utt.audio.size, sr, seed, talkers=talkers, mains_hz=float(params["mains_hz"])
                    )
                noisy = mix_at_snr(utt.audio, noises[kind], cond["snr_db"], sr)
            codes = encode(codec, noisy)
            key = tuple(sorted(cond.items()))
            sem, full = token_stability(clean_codes, codes)
            tok_rows.setdefault(key, []).extend(
                [
                    {"utt": utt.id, **cond, "metric": "semantic_token_stability", "value": sem},
                    {"utt": utt.id, **cond, "metric": "token_stability_all_codebooks", "value": full},
                ]
            )
            for stage in stages:
                out = noisy if stage == "input" else decode(codec, codes, codes.shape[1], utt.audio.size)
                rows.setdefault((stage, key), []).extend(scorer.score(utt, out, {"stage": stage, **cond}))
    records: list[MetricRecord] = []
    data_hash = {ds.name: ds.sha256}
    for (stage, key), rr in rows.items():
        cond = {"stage": stage, **dict(key)}
        records += records_from_rows(ctx, rr, condition=cond, data_hash=data_hash, skipped_items=ds.skipped)
        ctx.add_samples(rr)
    collapsed = ""
    if max(distinct) <= 2:
        collapsed = f"uninformative: clean inputs use at most {max(distinct)} distinct semantic tokens"
    for key, rr in tok_rows.items():
        ctx.add_samples(rr)
        for metric in ("semantic_token_stability", "token_stability_all_codebooks"):
            vals = [r["value"] for r in rr if r["metric"] == metric]
            extra = {
                "n_codebooks": int(codec.num_codebooks),
                "distinct_clean_semantic_tokens": distinct,
            }
            records.append(
                MetricRecord(
                    ctx.suite,
                    ctx.variant.name,
                    metric,
                    float(np.mean(vals)),
                    "fraction",
                    len(vals),
                    condition=dict(key),
                    higher_is_better=True,
                    statistic="mean",
                    samples=vals,
                    data=data_hash,
                    extra=extra,
                    reason=collapsed if metric == "semantic_token_stability" else "",
                )
            )
    return annotated(records, scorer, codec, ds)

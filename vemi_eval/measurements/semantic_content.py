"""Measurement kind ``semantic_content``: how much of what an ASR encoder hears survives the first codebooks.

Each held-out utterance is encoded, decoded from its first n codebooks only (n = 1: the semantic codebook
alone), and both the input and the decoded speech go through the bundled whisper tiny.en encoder
(CTranslate2, the ASR evaluator's model); the record is the mean over frames of the cosine between the two
feature sequences (50 Hz frames, aligned by time), one sample per utterance. It stands in for the WER of
speech decoded from the first codebook: at the tiny codec's quality whisper hallucinates on such speech
(WER 7.0 from codebook 1 and 4.0 from 8, i.e. 700% and 400%, on the bundled codec continued 5 steps),
which no longer ranks anything, while
the encoder's features degrade smoothly with lost content. Not a training target read back: the 3.1
recipe distils the *latent* toward these features through a head the codec does not keep; here they are
computed from decoded audio.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.codec_roundtrip import bitrate_kbps, codebooks_in_use, decode, encode, sweep_codebooks
from ..records import MetricRecord
from ..stats import bootstrap_ci
from . import MeasureContext, at_least, ints_at_least, measurement, merged_params
from .common import codec_of, load_data

PARAMS: dict[str, Any] = {
    "n_codebooks": [1],
    "max_utterances": 0,
    "split": "heldout",
    "max_input_s": 1800.0,
    "asr_model": "",  # local faster-whisper folder; "" = the bundled tiny.en
}


def frame_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine between two [frames, dim] sequences over their common frames."""
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def check(p: dict[str, Any]) -> None:
    ints_at_least(p, "n_codebooks", 1)
    at_least(p, "max_utterances", 0)


# version 2: 16 and 32 codebooks are decoded from 16 and 32 (they were capped at the LM's 8)
@measurement(
    "semantic_content", params=PARAMS, version=2, check=check, exact=("*",), data=True
)  # fixed data, fixed teacher
def measure_semantic_content(ctx: MeasureContext) -> list[MetricRecord]:
    from ..evaluators.asr import SPEC
    from ..training.semantic import WhisperTeacher

    params = merged_params(ctx, PARAMS)
    codec = codec_of(ctx.variant.build())
    sr = int(codec.sample_rate)
    ds = load_data(ctx, sr, params)
    teacher = WhisperTeacher(sr, int(codec.frame_size), model_dir=params["asr_model"] or None)
    ns = sweep_codebooks(codec, params["n_codebooks"])
    sims: dict[int, list[float]] = {n: [] for n in ns}
    with codebooks_in_use(codec, max(ns)):
        for i, utt in enumerate(ds.utterances):
            ctx.progress(f"semantic_content: {utt.id} ({i + 1}/{len(ds.utterances)})")
            ref = teacher.frames(utt.audio, sr)
            codes = encode(codec, utt.audio)
            for n in ns:
                sim = frame_cosine(ref, teacher.frames(decode(codec, codes, n, utt.audio.size), sr))
                sims[n].append(sim)
                ctx.add_samples([{"utterance": utt.id, "n_codebooks": n, "asr_encoder_similarity": sim}])
    records = []
    for n in ns:
        lo, hi = bootstrap_ci(sims[n], "mean", seed=ctx.seed)
        records.append(
            MetricRecord(
                ctx.suite, ctx.variant.name, "asr_encoder_similarity", float(np.mean(sims[n])), "cosine",
                len(sims[n]), ci_low=lo, ci_high=hi,
                condition={"n_codebooks": n, "bitrate_kbps": bitrate_kbps(codec, n)}, higher_is_better=True,
                samples=sims[n], statistic="mean", evaluator={"name": "asr", **SPEC.info()},
                data={ds.name: ds.sha256}, extra={"teacher": teacher.info.name},
            )
        )  # fmt: skip
    return records

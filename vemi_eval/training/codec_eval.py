"""The codec trainer's held-out table: offline round trips of held-out voices, scored by PESQ-WB, STOI and
decoded level (also used by scripts/codec_diagnosis.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reference_model.codec import MimiCodec

from ..data.codec_corpus import codec_corpus
from ..data.corpus import espeak_corpus

EVAL_CODEBOOKS = (1, 2, 4, 8, 16, 32)


@dataclass
class Heldout:
    """Held-out utterances of one engine: (name, float32 audio at the codec's rate)."""

    engine: str
    utterances: list[tuple[str, str, np.ndarray]] = field(default_factory=list)  # (id, speaker, audio)


def heldout_sets(sample_rate: int, per_set: int | None = None) -> list[Heldout]:
    """espeak evaluation corpus (the codec suite's data), the codec corpus's held-out espeak variants and
    its held-out festival voices (recorded human speakers)."""
    sets = [Heldout("espeak_eval_corpus")]
    for u in espeak_corpus(split="heldout", sample_rate=sample_rate):
        sets[0].utterances.append((u.id, u.speaker or "?", u.audio.astype(np.float32)))
    held = codec_corpus("heldout", sample_rate=sample_rate)
    for engine in ("espeak", "festival"):
        h = Heldout(f"{engine}_heldout_voices")
        for i, it in enumerate(held.items):
            if it["engine"] == engine:
                h.utterances.append((f"{engine}_{i:04d}", it["speaker"], held.utterance(i)))
        sets.append(h)
    if per_set is not None:
        for h in sets:  # spread over speakers
            step = max(1, len(h.utterances) // per_set)
            h.utterances = h.utterances[::step][:per_set]
    return sets


def _level_db(ref: np.ndarray, out: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(out.astype(np.float64) ** 2)) / np.sqrt(np.mean(ref**2))))


def score_roundtrip(ref: np.ndarray, out: np.ndarray, sample_rate: int) -> tuple[float, float, float]:
    """(PESQ-WB, STOI, decoded level in dB re input) of one decoded utterance, both resampled to 16 kHz."""
    from pesq import pesq
    from pystoi import stoi
    from scipy.signal import resample_poly

    g = math.gcd(16000, sample_rate)
    r16 = resample_poly(ref, 16000 // g, sample_rate // g)
    o16 = resample_poly(out, 16000 // g, sample_rate // g)
    return pesq(16000, r16, o16, "wb"), stoi(r16, o16, 16000), _level_db(ref, out)


def evaluate_codec(codec: MimiCodec, sets: list[Heldout], codebooks=EVAL_CODEBOOKS) -> dict[str, Any]:
    """PESQ-WB, STOI (16 kHz) and decoded level (dB re input) of offline encode/decode, per held-out set
    and number of codebooks: mean over utterances, and per speaker."""
    was_training = codec.training
    codec.eval()
    keep = codec.num_codebooks
    results: dict[str, Any] = {}
    for h in sets:
        per_n: dict[str, Any] = {}
        for n in codebooks:
            codec.set_num_codebooks(n)
            rows = []
            for _uid, spk, ref in h.utterances:
                with torch.no_grad():
                    out = codec.decode(codec.encode(torch.from_numpy(ref).view(1, 1, -1)))[0, 0, : len(ref)]
                rows.append((spk, *score_roundtrip(ref, out.numpy(), codec.sample_rate)))
            arr = np.array([r[1:] for r in rows])
            speakers = sorted({r[0] for r in rows})
            per_n[str(n)] = {
                "pesq_wb": float(arr[:, 0].mean()),
                "stoi": float(arr[:, 1].mean()),
                "level_db": float(arr[:, 2].mean()),
                "n": len(rows),
                "per_speaker_stoi": {s: float(np.mean([r[2] for r in rows if r[0] == s])) for s in speakers},
            }
        results[h.engine] = per_n
    codec.set_num_codebooks(keep)
    codec.train(was_training)
    return results

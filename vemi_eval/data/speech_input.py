"""The speech a systems kind (latency, memory, throughput) streams into the model: the held-out espeak
corpus looped, or a deterministic synthetic speech-like signal, cut into frames for B streams.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def synthetic_speech(n_samples: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Deterministic speech-like PCM: voiced syllables (a glottal pulse train with a moving pitch through
    three formant resonators) with noisy onsets, separated by pauses; -24 dBFS RMS, peak <= -1 dBFS."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    out = np.zeros(n_samples, dtype=np.float64)
    pos = 0
    while pos < n_samples:
        syl = int(sample_rate * rng.uniform(0.12, 0.3))
        t = np.arange(syl) / sample_rate
        f0 = rng.uniform(95, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = np.cumsum(f0 / sample_rate)
        source = 2.0 * (phase % 1.0) - 1.0  # sawtooth: a glottal source rich in harmonics
        source[: syl // 6] += 0.3 * rng.standard_normal(syl // 6)  # consonant-like noise onset
        voiced = source
        for formant, bandwidth in ((rng.uniform(300, 800), 80), (rng.uniform(900, 2200), 120), (2700, 200)):
            r = np.exp(-np.pi * bandwidth / sample_rate)
            theta = 2 * np.pi * formant / sample_rate
            voiced = voiced + lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], source)
        seg = voiced * np.hanning(syl)
        end = min(n_samples, pos + syl)
        out[pos:end] = seg[: end - pos]
        pos = end + (int(sample_rate * rng.uniform(0.2, 0.6)) if rng.random() < 0.25 else 0)
    out += 1e-4 * rng.standard_normal(n_samples)
    out *= 10 ** (-24 / 20) / max(np.sqrt(np.mean(out**2)), 1e-12)
    out *= min(1.0, 10 ** (-1 / 20) / np.abs(out).max())  # peak at most -1 dBFS
    return out.astype(np.float32)


def input_pcm(
    kind: str, n_samples: int, sample_rate: int, seed: int
) -> tuple[np.ndarray, dict[str, Any], dict[str, str]]:
    """``n_samples`` of mono speech: the held-out espeak corpus looped ("corpus"), or ``synthetic_speech``.
    Returns the audio, facts for the records' extra, and the data hashes (corpus name -> sha256)."""
    if kind == "synthetic":
        return synthetic_speech(n_samples, sample_rate, seed), {"input": "synthetic", "input_seed": seed}, {}
    if kind != "corpus":
        raise ValueError(f"input must be 'corpus' or 'synthetic', got {kind!r}")
    from ..data.corpus import corpus_sha256, espeak_corpus

    utts = espeak_corpus(split="heldout", quick=True, sample_rate=sample_rate)
    gap = np.zeros(int(0.3 * sample_rate), dtype=np.float32)  # a turn gap between utterances
    one_pass = np.concatenate([x for u in utts for x in (u.audio.astype(np.float32), gap)])
    reps = -(-n_samples // one_pass.size)
    pcm = np.tile(one_pass, reps)[:n_samples]
    return pcm, {"input": "corpus", "corpus_utterances": len(utts)}, {"corpus": corpus_sha256(utts)}


def stream_frames(pcm: np.ndarray, batch_size: int, frame_size: int, n_frames: int, device) -> torch.Tensor:
    """[n_frames, B, 1, frame_size]: B streams, each its own stretch of ``pcm`` (offset by 37 frames)."""
    need = (n_frames + 37 * (batch_size - 1)) * frame_size
    if pcm.size < need:
        pcm = np.tile(pcm, -(-need // pcm.size))
    streams = [pcm[37 * b * frame_size : (37 * b + n_frames) * frame_size] for b in range(batch_size)]
    x = torch.from_numpy(np.stack(streams)).view(batch_size, n_frames, 1, frame_size)
    return x.permute(1, 0, 2, 3).contiguous().to(device)

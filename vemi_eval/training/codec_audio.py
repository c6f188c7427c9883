"""The codec trainer's training audio: random crops of a corpus's training split, with gain jitter."""

from __future__ import annotations

import numpy as np
import torch

from ..data.codec_corpus import codec_corpus, summary
from ..data.corpus import corpus_sha256, espeak_corpus
from .codec_recipes import CodecRecipe


class TrainingAudio:
    """Random crops of the training split, with gain jitter."""

    def __init__(self, recipe: CodecRecipe, sample_rate: int, log=print) -> None:
        if recipe.data == "codec_corpus":
            corpus = codec_corpus("train", sample_rate=sample_rate, log=log)
            self.audio = np.asarray(corpus.audio)
            self.offsets = corpus.offsets
            self.summary = {"corpus": "codec_corpus(split='train')", **summary(corpus)}
        elif recipe.data == "espeak_corpus":
            utts = espeak_corpus(split="train", sample_rate=sample_rate)
            pcm = [np.clip(u.audio * 32767, -32767, 32767).astype(np.int16) for u in utts]
            self.audio = np.concatenate(pcm)
            self.offsets = np.cumsum([0] + [len(p) for p in pcm])
            self.summary = {"corpus": "espeak_corpus(split='train')", "utterances": len(utts),
                            "sha256": corpus_sha256(utts)}  # fmt: skip
        else:
            raise ValueError(f"unknown codec training data {recipe.data!r}")
        self.recipe = recipe

    def batch(self, rng: np.random.Generator, length: int) -> torch.Tensor:
        b = self.recipe.batch_size
        out = np.zeros((b, 1, length), dtype=np.float32)
        n = len(self.offsets) - 1
        for i in range(b):
            k = int(rng.integers(n))
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            if hi - lo <= length:
                start = int(rng.integers(0, length - (hi - lo) + 1))
                out[i, 0, start : start + hi - lo] = self.audio[lo:hi] / 32767.0
            else:
                s = int(rng.integers(lo, hi - length + 1))
                out[i, 0] = self.audio[s : s + length] / 32767.0
            j = self.recipe.gain_jitter_db
            out[i] *= 10 ** (rng.uniform(-j, j / 2) / 20)
        return torch.from_numpy(out)

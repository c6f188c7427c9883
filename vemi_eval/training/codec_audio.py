"""The codec trainer's training audio: random crops of a corpus's training split (and, at the recipe's
``model_voice_share``, of the model's own voice), with gain jitter."""

from __future__ import annotations

import numpy as np
import torch

from ..data.codec_corpus import codec_corpus, summary
from ..data.corpus import corpus_sha256, espeak_corpus
from ..data.model_voice import model_voice_audio
from .codec_recipes import CodecRecipe


class TrainingAudio:
    """Random crops of the training split, with gain jitter."""

    def __init__(self, recipe: CodecRecipe, sample_rate: int, log=print) -> None:
        if not 0.0 <= recipe.model_voice_share <= 1.0:  # before any corpus is read
            raise ValueError(f"model_voice_share must be in [0, 1], got {recipe.model_voice_share}")
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
        self.voice_audio: np.ndarray | None = None
        self.voice_offsets: np.ndarray | None = None
        if recipe.model_voice_share > 0:
            voice = model_voice_audio(sample_rate=sample_rate, log=log)
            self.voice_audio, self.voice_offsets = np.asarray(voice.audio), voice.offsets
            self.summary["model_voice"] = {"share": recipe.model_voice_share, **summary(voice)}

    def batch(self, rng: np.random.Generator, length: int) -> torch.Tensor:
        b = self.recipe.batch_size
        out = np.zeros((b, 1, length), dtype=np.float32)
        share = self.recipe.model_voice_share
        for i in range(b):
            # the model voice's draw comes first only when it is on: runs without it keep their crops
            voiced = share > 0 and bool(rng.random() < share)
            audio, offsets = (self.voice_audio, self.voice_offsets) if voiced else (self.audio, self.offsets)
            k = int(rng.integers(len(offsets) - 1))
            lo, hi = int(offsets[k]), int(offsets[k + 1])
            if hi - lo <= length:
                start = int(rng.integers(0, length - (hi - lo) + 1))
                out[i, 0, start : start + hi - lo] = audio[lo:hi] / 32767.0
            else:
                s = int(rng.integers(lo, hi - length + 1))
                out[i, 0] = audio[s : s + length] / 32767.0
            j = self.recipe.gain_jitter_db
            out[i] *= 10 ** (rng.uniform(-j, j / 2) / 20)
        return torch.from_numpy(out)

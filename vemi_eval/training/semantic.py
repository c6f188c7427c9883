"""Recipe option ``semantic-distill`` (3.1): the first codebook distilled toward a semantic teacher.

Mimi's split RVQ gives its first codebook (``rvq_first``) a target of its own: a linear projection of that
codebook's output is pulled, by cosine distance, toward WavLM features of the same audio, so the first
code carries the content and the acoustic codebooks the rest. Here the teacher is the encoder of the
bundled whisper tiny.en (CTranslate2, offline; the ASR evaluator's model), computed for every training
batch: the crops resampled to 16 kHz, whisper's log-mel, ``encode()`` (384-dim frames at 50 Hz), averaged
over groups of 4 frames to the codec's 12.5 Hz.

Without the option the first codebook has no target of its own (the baseline: the same split RVQ and
bitrate, trained on reconstruction only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

TEACHER_RATE = 16000
TEACHER_FRAMES_PER_CODEC_FRAME = 4  # whisper's encoder: 50 Hz; the codec: 12.5 Hz


@dataclass
class TeacherInfo:
    name: str
    weights_sha256: dict | None
    dim: int


class WhisperTeacher:
    """Whisper encoder features of codec-rate audio, pooled to the codec's frame rate."""

    def __init__(
        self, sample_rate: int, frame_size: int, threads: int = 1, model_dir: str | None = None
    ) -> None:
        from ..evaluators.asr import SPEC, load_model

        self.model = load_model(model_dir, threads=threads)
        self.sample_rate = sample_rate
        self.frame_size = frame_size
        dim = int(self._encode(np.zeros((1, frame_size * 2), np.float32)).shape[-1])
        name = "whisper tiny.en encoder (faster-whisper / CTranslate2)"
        self.info = TeacherInfo(name, SPEC.info().get("weights_sha256"), dim)

    def _encode(self, audio16: np.ndarray) -> np.ndarray:
        """[B, samples at 16 kHz] -> encoder frames [B, frames, dim]."""
        import ctranslate2

        mels = np.stack([self.model.feature_extractor(a) for a in audio16]).astype(np.float32)
        out = self.model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(mels)), to_cpu=True
        )
        return np.asarray(out)

    def frames(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Encoder frames [frames, dim] (50 Hz) of one mono utterance at any rate."""
        from ..data.audio import resample

        return self._encode(resample(audio, sample_rate, TEACHER_RATE)[None])[0]

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, 1, T] at the codec's rate (T a multiple of frame_size) -> [B, dim, T / frame_size]."""
        from ..data.audio import resample

        frames = wav.shape[-1] // self.frame_size
        audio = wav[:, 0].detach().float().cpu().numpy()
        audio16 = np.stack([resample(a, self.sample_rate, TEACHER_RATE) for a in audio])
        enc = self._encode(audio16)
        need = frames * TEACHER_FRAMES_PER_CODEC_FRAME
        if enc.shape[1] < need:  # whisper's last frame can be missing: repeat it
            enc = np.concatenate([enc, np.repeat(enc[:, -1:], need - enc.shape[1], axis=1)], axis=1)
        pooled = enc[:, :need].reshape(enc.shape[0], frames, TEACHER_FRAMES_PER_CODEC_FRAME, -1).mean(2)
        return torch.from_numpy(np.ascontiguousarray(pooled.transpose(0, 2, 1))).to(wav.device)


class SemanticHead(nn.Module):
    """The linear projection of the first codebook's output onto the teacher's space (training only: it is
    not part of the codec's weights)."""

    def __init__(self, codec_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(codec_dim, teacher_dim, 1)

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        return self.proj(first)


def distill_loss(head: SemanticHead, first: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance (1 - cos) over frames between head(first codebook output) and the teacher."""
    return (1 - F.cosine_similarity(head(first), teacher, dim=1, eps=1e-8)).mean()

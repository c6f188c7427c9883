"""Recipe option ``speaker-cond`` (enhancement 6.2, speaker consistency) of the LM trainer.

Two parts, both opt-in through the option and neither touching the plain model:

- **Speaker-embedding conditioning**, Moshi-conditioner style: a fixed embedding of the model's voice
  (resemblyzer's GE2E d-vector of a reference recording of it, festival ked_diphone) through a learned
  projection (zero at the start, so a warm start begins exactly at the plain model) is added to the
  summed input embeddings at every step. The corpus has one model voice, so this offset is one learned
  vector; a constant added to every input equals adding it to every row of the text embedding table (the
  text stream is never the zero token at inference), which is how it is exported: the shipped checkpoint
  is a plain Moshi-format LM with the same keys. With several model voices the same code conditions on
  each voice's d-vector; here that cannot be shown.
- **A speaker-consistency loss** on the model's audio stream. A speaker-verification loss needs
  differentiable audio, and a token LM gives none (sampling tokens and the codec's decoder break the
  gradient path), so the honest variant at this scale works on tokens: the voice's acoustic codebooks
  (1..dep_q-1; codebook 0 is the semantic one) have a usage histogram over its speech frames (a
  codebook-histogram speaker model, as in VQ speaker recognition), taken from the training data's model
  stream; the loss is KL(voice histogram || the model's mean predicted distribution over the speech
  frames of the batch), per codebook, averaged. It pulls the model's sampling away from codes its voice
  never uses. Speech frames: those whose codebook-0 target is not the codec's code for silence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import LMOption, OptionContext


def reference_embedding() -> np.ndarray:
    """resemblyzer's d-vector of the model voice's reference recording (the dialogue corpus's)."""
    from vemi_eval.data import dialogue as dlg
    from vemi_eval.evaluators import speaker as spk

    return spk.embed(dlg.model_reference_audio(), dlg.SAMPLE_RATE)


def silence_code(codec_checkpoint, sample_rate: int = 24000) -> int:
    """Codebook-0 code the codec gives steady (dithered) silence: its most frequent code on 3 s of it."""
    from reference_model import bundled_codec_weights, load_codec
    from vemi_eval.data.audio import dither

    codec = load_codec("tiny", codec_checkpoint or bundled_codec_weights("tiny"))
    x = dither(np.zeros(3 * sample_rate, np.float32), 1)
    with torch.no_grad():
        codes = codec.encode(torch.from_numpy(x).view(1, 1, -1))[0, 0]
    return int(torch.mode(codes).values)


def voice_histograms(
    grids: list[torch.Tensor], dep_q: int, card: int, silence: int
) -> tuple[torch.Tensor, int]:
    """Usage histogram [dep_q - 1, card] of the model stream's acoustic codebooks over its speech frames."""
    counts = torch.zeros(dep_q - 1, card, dtype=torch.float64)
    frames = 0
    for g in grids:
        speech = (g[1] != silence) & (g[1] >= 0)
        frames += int(speech.sum())
        for k in range(1, dep_q):
            tok = g[1 + k][speech & (g[1 + k] >= 0)]
            counts[k - 1] += torch.bincount(tok, minlength=card).double()
    if frames == 0:
        raise ValueError("speaker-cond: the training data's model stream has no speech frames")
    return (counts / counts.sum(dim=1, keepdim=True).clamp(min=1)).float(), frames


def consistency_kl(
    audio_logits: torch.Tensor,
    audio_targets: torch.Tensor,
    audio_valid: torch.Tensor,
    voice: torch.Tensor,
    silence: int,
) -> torch.Tensor:
    """KL(voice || mean predicted distribution) over the speech frames, per acoustic codebook, averaged.
    audio_logits [F, dep_q, card]; targets/valid [F, dep_q]; voice [dep_q - 1, card]."""
    speech = audio_valid[:, 0] & (audio_targets[:, 0] != silence)
    if not bool(speech.any()):
        return audio_logits.sum() * 0.0
    q = F.softmax(audio_logits[speech][:, 1:].float(), dim=-1).mean(dim=0)  # [dep_q - 1, card]
    p = voice.to(q.device)
    kl = torch.where(p > 0, p * (torch.log(p.clamp(min=1e-30)) - torch.log(q.clamp(min=1e-30))), 0.0)
    return kl.sum(dim=-1).mean()


class SpeakerConditioning(nn.Module):
    """A fixed voice embedding through a learned projection: the offset added to every input."""

    def __init__(self, embedding: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.register_buffer("embedding", embedding.float().view(1, -1), persistent=False)
        self.proj = nn.Linear(embedding.numel(), dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self) -> torch.Tensor:
        return self.proj(self.embedding).view(1, 1, -1)


def fold_offset(tensors: dict[str, torch.Tensor], offset: torch.Tensor) -> dict[str, torch.Tensor]:
    """The plain model that computes what model + constant input offset computes (text never -1)."""
    out = dict(tensors)
    out["text_emb.weight"] = tensors["text_emb.weight"] + offset.view(1, -1).to(tensors["text_emb.weight"])
    return out


@dataclass
class SpeakerCond(LMOption):
    name: ClassVar[str] = "speaker-cond"
    weight: float = 1.0  # of the consistency loss beside Moshi's objective
    conditioning: bool = True  # the voice-embedding offset (false: the loss alone)

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")

    def setup(self, ctx: OptionContext) -> None:
        emb = np.asarray(reference_embedding(), np.float32)
        self.embedding_sha256 = hashlib.sha256(emb.tobytes()).hexdigest()[:16]
        self.cond = SpeakerConditioning(torch.from_numpy(emb), ctx.cfg.dim)
        codec = ctx.corpus.codec_checkpoint if ctx.corpus is not None else None
        self.silence = silence_code(codec)
        self.voice, self.speech_frames = voice_histograms(
            ctx.train.grids, ctx.cfg.dep_q, ctx.cfg.card, self.silence
        )
        self.voice = self.voice.to(ctx.device)
        self.kl: list[float] = []

    def recipe(self) -> dict[str, Any]:
        # the voice (its embedding) and the silence code decide what the option does
        return {**super().recipe(), "embedding_sha256": self.embedding_sha256, "silence_code": self.silence}

    def trainable(self) -> nn.Module | None:
        return self.cond if self.conditioning else None

    def input_offset(self, lm, batch: torch.Tensor) -> torch.Tensor | None:
        return self.cond().to(lm.dtype) if self.conditioning else None

    def loss(self, lm, batch: torch.Tensor, frames: torch.Tensor | None, parts):
        from ..lm_objective import delay_grid, valid_targets

        _, targets = delay_grid(lm, batch)
        valid = valid_targets(lm, targets)
        B, K, T = targets.shape
        audio_t = targets[:, 1 : 1 + lm.dep_q].transpose(1, 2).reshape(B * T, lm.dep_q)
        audio_valid = valid[:, 1 : 1 + lm.dep_q].transpose(1, 2).reshape(B * T, lm.dep_q)
        if frames is not None:
            audio_t, audio_valid = audio_t[frames], audio_valid[frames]
        kl = consistency_kl(parts.audio_logits, audio_t, audio_valid, self.voice, self.silence)
        self.kl.append(float(kl.detach()))
        parts.total = parts.total + self.weight * kl
        return parts

    def export(self, lm, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.conditioning:
            return tensors
        with torch.no_grad():
            return fold_offset(tensors, self.cond().detach())

    def report(self) -> dict[str, Any]:
        with torch.no_grad():
            norm = float(self.cond().norm()) if self.conditioning else None
        return {
            "conditioning": "resemblyzer d-vector of festival ked_diphone -> learned linear (zero init)"
            if self.conditioning
            else None,
            "exported_as": "the conditioning offset added to every row of text_emb.weight (a plain LM)",
            "offset_norm": norm,
            "consistency_codebooks": "1..dep_q-1 (acoustic)",
            "silence_code": self.silence,
            "voice_speech_frames": self.speech_frames,
            "speaker_kl_first_last": [self.kl[0], float(np.mean(self.kl[-10:]))] if self.kl else None,
        }

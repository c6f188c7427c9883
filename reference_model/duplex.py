"""The one narrow interface through which anything outside the model (the harness, outside checks) drives
a full-duplex conversation: user PCM in, text tokens and model PCM out, one 80 ms frame per step.

Each stage is a separate call so that a caller can time it (encode the user's frame, one LM step, decode
the model's frame). The model knows nothing of who calls it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class DuplexSpec:
    """Everything needed to build one model variant."""

    lm: str | dict = "tiny"  # preset name, path to a Moshi-format config JSON, or a dict
    codec: str | dict = "tiny"  # preset name ("tiny", "mimi"), path or dict
    lm_checkpoint: str | None = None
    codec_checkpoint: str | None = None  # None: the preset's bundled weights where it has some
    flags: str | Iterable[str] | None = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    batch_size: int = 1
    seed: int = 0
    temp: float = 0.8
    temp_text: float = 0.7
    top_k: int = 250
    top_k_text: int = 25
    extra: dict[str, Any] = field(default_factory=dict)


class DuplexModel:
    """LM + codec + their streaming state for ``batch_size`` concurrent conversations."""

    def __init__(self, lm, codec, streamer, codec_streamer, spec: DuplexSpec, flags: list) -> None:
        self.lm = lm
        self.codec = codec
        self.streamer = streamer
        self.codec_streamer = codec_streamer
        self.spec = spec
        self.flags = flags
        self.batch_size = spec.batch_size
        self.device = torch.device(spec.device)
        self.sample_rate: int = codec.sample_rate
        self.frame_size: int = codec.frame_size
        self.frame_rate: float = codec.frame_rate
        self.n_user_codebooks: int = lm.n_q - lm.dep_q
        self.dep_q: int = lm.dep_q
        self.max_delay: int = max(lm.delays)

    # --- the three timed stages -------------------------------------------------------------
    def encode_user(self, pcm: torch.Tensor) -> torch.Tensor:
        """[B, 1, frame_size] float PCM -> user codes [B, n_user_codebooks, 1]."""
        codes = self.codec_streamer.encode(pcm)
        return codes[:, : self.n_user_codebooks]

    def lm_step(self, user_codes: torch.Tensor) -> torch.Tensor | None:
        """User codes [B, 8, 1] -> [B, 1 + dep_q, 1] (text + model audio), None during the first delays."""
        return self.streamer.step(user_codes)

    def decode_model(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, 1 + dep_q, 1] -> model PCM [B, 1, frame_size].

        A conversation reset part-way is still inside its delays: its rows hold -2 ("not generated yet").
        Those rows are decoded as code 0 (so every row's codec state advances in lockstep) and come out
        as silence.
        """
        audio = tokens[:, 1:]
        pending = (audio == -2).any(dim=1).view(-1)  # [B]; -1 (a codebook not sent) is the codec's business
        if not bool(pending.any()):
            return self.codec_streamer.decode(audio)
        pcm = self.codec_streamer.decode(audio.masked_fill(audio == -2, 0))
        return pcm.masked_fill(pending.view(-1, 1, 1), 0.0)

    # --- convenience --------------------------------------------------------------------------
    def step(self, pcm: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One full-duplex frame. Returns (text tokens [B] or None, model PCM [B, 1, frame_size])."""
        tokens = self.lm_step(self.encode_user(pcm))
        if tokens is None:
            return None, torch.zeros(pcm.shape[0], 1, self.frame_size, device=pcm.device, dtype=pcm.dtype)
        return tokens[:, 0, 0], self.decode_model(tokens)

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Reset every conversation, or those where ``mask`` [B] is True."""
        self.streamer.reset(mask)
        self.codec_streamer.reset(mask)

    def sync(self) -> None:
        """Wait for queued device work (a no-op on CPU): call before reading a clock."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

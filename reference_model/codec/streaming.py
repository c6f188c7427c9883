"""Frame-by-frame streaming over a :class:`MimiCodec` for ``batch_size`` independent streams.

The state lives here, not in the codec's modules, so several streamers can share one codec. ``reset(mask)``
returns the selected streams to a fresh start; the others go on untouched.
"""

from __future__ import annotations

import torch

from .conv import reset_state
from .model import MimiCodec


class CodecStreamer:
    def __init__(self, codec: MimiCodec, batch_size: int = 1) -> None:
        self.codec = codec
        self.batch_size = batch_size
        self.frame_size = codec.frame_size
        self._enc = codec.new_encoder_state(batch_size)
        self._dec = codec.new_decoder_state(batch_size)

    def _mask(self, mask: torch.Tensor | None) -> torch.Tensor:
        device = self._enc.transformer.offset.device
        if mask is None:
            return torch.ones(self.batch_size, dtype=torch.bool, device=device)
        mask = torch.as_tensor(mask, dtype=torch.bool, device=device).reshape(-1)
        if mask.numel() != self.batch_size:
            raise ValueError(
                f"reset mask has {mask.numel()} items, the streamer has batch size {self.batch_size}"
            )
        return mask

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Reset every stream, or those where ``mask`` [B] is True."""
        m = self._mask(mask)
        for part in (self._enc, self._dec):
            for s in vars(part).values():
                reset_state(s, m)

    @torch.no_grad()
    def encode(self, frame: torch.Tensor) -> torch.Tensor:
        """[B, 1, frame_size] -> codes [B, num_codebooks, 1]."""
        expected = (self.batch_size, self.codec.channels, self.frame_size)
        if tuple(frame.shape) != expected:
            raise ValueError(f"encode expects a frame of shape {list(expected)}, got {list(frame.shape)}")
        return self.codec.quantizer.encode(self.codec.encode_latent(frame, self._enc))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, n, 1] (n <= max codebooks; missing ones contribute nothing) -> [B, 1, frame_size]."""
        if codes.dim() != 3 or codes.shape[0] != self.batch_size or codes.shape[2] != 1:
            raise ValueError(
                f"decode expects codes of shape [{self.batch_size}, n, 1], got {list(codes.shape)}"
            )
        self.codec._check_codes(codes)
        return self.codec.decode_latent(self.codec.quantizer.decode(codes), self._dec)

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
        # A multi-rate codec's coarse codes need their whole window: latent frames wait here until it closes.
        self.window = int(getattr(codec.quantizer, "code_window", 1))
        self._pending: list[torch.Tensor] = []

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
        if self._pending and not bool(m.all()):
            raise ValueError(
                "a multi-rate codec's streams share their code windows: reset all of them at once"
            )
        self._pending = []
        for part in (self._enc, self._dec):
            for s in vars(part).values():
                reset_state(s, m)

    @torch.no_grad()
    def encode(self, frame: torch.Tensor) -> torch.Tensor:
        """[B, 1, frame_size] -> codes [B, num_codebooks, 1].

        A multi-rate codec (code window W > 1) gives codes [B, num_codebooks, W] for the last W frames at
        the frame that closes a window, [B, num_codebooks, 0] at the others: a coarse code is known only
        once its window is over, so audio lags the input by W - 1 frames more than with one rate."""
        expected = (self.batch_size, self.codec.channels, self.frame_size)
        if tuple(frame.shape) != expected:
            raise ValueError(f"encode expects a frame of shape {list(expected)}, got {list(frame.shape)}")
        latent = self.codec.encode_latent(frame, self._enc)
        if self.window == 1:
            return self.codec.quantizer.encode(latent)
        self._pending.append(latent)
        if len(self._pending) < self.window:
            return torch.zeros(
                self.batch_size, self.codec.num_codebooks, 0, dtype=torch.long, device=latent.device
            )
        chunk, self._pending = torch.cat(self._pending, dim=-1), []
        return self.codec.quantizer.encode(chunk)

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        """Codes of the frames still waiting for their window to close (the end of the input: a last partial
        window's code is its frames' mean, as offline); [B, num_codebooks, 0] when none wait."""
        if not self._pending:
            device = self._enc.transformer.offset.device
            return torch.zeros(self.batch_size, self.codec.num_codebooks, 0, dtype=torch.long, device=device)
        chunk, self._pending = torch.cat(self._pending, dim=-1), []
        return self.codec.quantizer.encode(chunk)

    @torch.no_grad()
    def decode_tail(self) -> torch.Tensor:
        """[B, 1, codec.decode_delay]: the samples a delayed decoder still holds (partial sums of the frames
        so far), which ends a stream exactly as offline decoding ends; [B, 1, 0] for SEANet."""
        tail = getattr(self._dec.seanet, "tail", None)
        if tail is None:
            return torch.zeros(self.batch_size, 1, 0, device=self._enc.transformer.offset.device)
        return tail.unsqueeze(1).clone()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, n, 1] (n <= max codebooks; missing ones contribute nothing) -> [B, 1, frame_size]."""
        if codes.dim() != 3 or codes.shape[0] != self.batch_size or codes.shape[2] != 1:
            raise ValueError(
                f"decode expects codes of shape [{self.batch_size}, n, 1], got {list(codes.shape)}"
            )
        self.codec._check_codes(codes)
        return self.codec.decode_latent(self.codec.quantizer.decode(codes), self._dec)

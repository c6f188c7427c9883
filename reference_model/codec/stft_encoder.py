"""A causal STFT encoder front-end: waveform -> log-magnitude spectrogram (100 Hz) -> causal ConvNeXt ->
folded to the encoder's frame rate. The ``tiny-stft`` codec preset's switch (config ``encoder``).

Why: the tiny SEANet encoder's 16-64-channel convolutions at 6-24 kHz are memory-bound on a CPU and cost
about as much as its decoder did. An STFT is one FFT per 10 ms, and every learned layer here runs at 100
Hz as dense matmuls (the iSTFT decoder's argument, codec/istft.py, on the way in). Intelligibility can be
had from magnitudes alone (an oracle 80-band mel at a 10 ms hop, inverted by Griffin-Lim, reaches STOI
0.93 on the held-out voices), and the iSTFT decoder predicts its own phase, so the encoder reads
magnitudes only.

Causality. Analysis frame ``j`` covers the input samples ``[(j + 1) * hop - n_fft, (j + 1) * hop)``
(zeros before the stream starts): it has seen nothing after its last sample, so encoding adds no delay.
Output frame ``t`` at the encoder rate folds the ``fold`` analysis frames ending at sample
``(t + 1) * hop * fold``, as SEANet's last strided conv does. Streaming carries the last ``n_fft - hop``
samples and the convolutions' contexts, and gives the offline output (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .conv import ConvState
from .istft import CausalConvNeXtBody

STFT_ENCODER_DEFAULTS = {
    "kind": "stft",
    "dim": 256,
    "intermediate_dim": 768,
    "num_blocks": 4,
    "kernel_size": 7,
    "n_fft": 960,
    "hop_length": 240,
}

LOG_FLOOR = 1e-5  # magnitude floor of the log spectrogram (about -100 dB re full scale)


@dataclass
class STFTEncoderState:
    """The last ``n_fft - hop`` input samples, and the causal-conv contexts of the embedding and blocks."""

    samples: ConvState
    convs: list[ConvState]

    def reset(self, mask: torch.Tensor) -> None:
        self.samples.reset(mask)
        for s in self.convs:
            s.reset(mask)


class STFTEncoder(CausalConvNeXtBody):
    """Waveform [B, 1, T] (T a multiple of the encoder hop) -> latent [B, dimension, T / encoder hop]."""

    def __init__(
        self,
        dimension: int,
        encoder_hop: int,
        dim: int = 256,
        intermediate_dim: int = 768,
        num_blocks: int = 4,
        kernel_size: int = 7,
        n_fft: int = 960,
        hop_length: int = 240,
        **_ignored,
    ) -> None:
        super().__init__()
        if encoder_hop % hop_length or n_fft < hop_length or n_fft % 2:
            raise ValueError(
                f"stft encoder: hop {hop_length} must divide the encoder hop {encoder_hop}, and n_fft "
                f"{n_fft} must be even and >= the hop"
            )
        self.fold = encoder_hop // hop_length
        self.dim, self.n_fft, self.hop_length = dim, n_fft, hop_length
        self.context = n_fft - hop_length
        self.proj = nn.Linear(n_fft // 2 + 1, dim)
        self._build_body(dim, intermediate_dim, kernel_size, num_blocks)
        self.out = nn.Linear(self.fold * dim, dimension)
        self._window: torch.Tensor | None = None  # made on first use (not a buffer: see ISTFTDecoder.window)

    def window(self, like: torch.Tensor) -> torch.Tensor:
        w = self._window
        if w is None or w.device != like.device or w.dtype != like.dtype:
            w = torch.hann_window(self.n_fft, periodic=True, dtype=like.dtype, device=like.device)
            self._window = w
        return w

    def new_state(self, batch_size: int) -> STFTEncoderState:
        like = self.proj.weight
        samples = ConvState(
            previous=torch.zeros(batch_size, 1, self.context, device=like.device, dtype=like.dtype),
            first=torch.ones(batch_size, dtype=torch.bool, device=like.device),
        )
        return STFTEncoderState(samples, self.body_states(batch_size))

    def spectrogram(self, x: torch.Tensor, state: STFTEncoderState | None = None) -> torch.Tensor:
        """[B, 1, T] -> log-magnitude [B, T / hop, n_fft / 2 + 1] of the causal analysis frames."""
        if x.shape[-1] % (self.hop_length * self.fold):
            raise ValueError(
                f"stft encoder input length {x.shape[-1]} is not a multiple of {self.hop_length * self.fold}"
            )
        if state is None:
            history = x.new_zeros(x.shape[0], 1, self.context)
        else:
            history = state.samples.previous
        padded = torch.cat([history, x], dim=-1)
        if state is not None:
            state.samples.previous.copy_(padded[..., -self.context :])
            state.samples.first.fill_(False)
        frames = padded[:, 0].unfold(-1, self.n_fft, self.hop_length)  # [B, T / hop, n_fft]
        mag = torch.fft.rfft(frames * self.window(frames), dim=-1).abs()
        return torch.log(mag.clamp(min=LOG_FLOOR))

    def forward(self, x: torch.Tensor, state: STFTEncoderState | None = None) -> torch.Tensor:
        h = self.proj(self.spectrogram(x, state)).transpose(1, 2)  # [B, dim, frames]
        h = self.body(h, None if state is None else state.convs)  # [B, frames, dim]
        b, n, _ = h.shape
        return self.out(h.reshape(b, n // self.fold, self.fold * self.dim)).transpose(1, 2)

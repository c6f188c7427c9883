"""A causal Vocos-style decoder: the decoder transformer's 25 Hz latent -> 100 Hz ConvNeXt -> log-magnitude
and phase -> inverse STFT by overlap-add. The ``tiny-istft`` codec preset's switch (config ``decoder``).

Why: the tiny SEANet decoder spends most of a training step's MACs in 16-32-channel convolutions at
6-24 kHz, memory-bound on a CPU. Here every layer runs at 100 Hz as dense matmuls and the waveform is one
inverse FFT per 10 ms (Vocos, arXiv 2306.00814; its ``heads.py``: ``exp`` of the magnitude clipped at 1e2,
``cos``/``sin`` of an unbounded phase, frames windowed and overlap-added, divided by the window envelope).

Causality. Vocos centres its frames ("same" padding), which looks ahead. Here frame ``t`` (made from
latents that have seen the input up to sample ``(t + 1) * hop``) is laid over the output samples
``[(t + 1) * hop - n_fft, (t + 1) * hop)``: every frame that contributes to a sample has seen it. A sample
is complete once the last frame over it has arrived, ``n_fft - hop`` samples later: that is the decoder's
delay (``delay``, 30 ms at n_fft 960 / hop 240), stated in the config and added by the latency suite.

Offline (``state=None``) the output is aligned with the input (its last ``delay`` samples are the partial
sums of the frames so far); streaming emits only complete samples, so the streamed waveform is the offline
one delayed by ``delay`` samples (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .conv import ConvState, StreamingConv1d

ISTFT_DEFAULTS = {
    "kind": "istft",
    "dim": 256,
    "intermediate_dim": 768,
    "num_blocks": 4,
    "kernel_size": 7,
    "n_fft": 960,
    "hop_length": 240,
}


@dataclass
class ISTFTState:
    """Causal-conv contexts of the embedding and every block, and the overlap-add tail (partial sums of the
    ``n_fft - hop`` samples that later frames still add to)."""

    convs: list[ConvState]
    tail: torch.Tensor  # [B, n_fft - hop]

    def reset(self, mask: torch.Tensor) -> None:
        for s in self.convs:
            s.reset(mask)
        self.tail[mask] = 0.0


class ConvNeXtBlock(nn.Module):
    """Vocos's block with a causal depthwise conv: dwconv -> LayerNorm -> Linear -> GELU -> Linear, scaled."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = StreamingConv1d(dim, dim, kernel_size, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor, state: ConvState | None = None) -> torch.Tensor:
        h = self.dwconv(x, state).transpose(1, 2)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class CausalConvNeXtBody(nn.Module):
    """The causal ConvNeXt body both spectral sides run at the STFT frame rate: embedding conv -> LayerNorm
    -> blocks -> LayerNorm (the iSTFT decoder here, the STFT encoder in stft_encoder.py). A base class, not
    a submodule, so that the weights keep their keys (``embed``, ``norm``, ``blocks``, ``final_norm``)."""

    def _build_body(self, dim: int, intermediate_dim: int, kernel_size: int, num_blocks: int) -> None:
        self.embed = StreamingConv1d(dim, dim, kernel_size)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, kernel_size, 1.0 / num_blocks) for _ in range(num_blocks)
        )
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)

    def body_states(self, batch_size: int) -> list[ConvState]:
        """The causal contexts of the embedding conv and of every block."""
        return [self.embed.new_state(batch_size)] + [b.dwconv.new_state(batch_size) for b in self.blocks]

    def body(self, h: torch.Tensor, convs: list[ConvState] | None = None) -> torch.Tensor:
        """[B, dim, frames] -> [B, frames, dim]; ``convs`` from :meth:`body_states` when streaming."""
        convs = convs if convs is not None else [None] * (len(self.blocks) + 1)
        h = self.norm(self.embed(h, convs[0]).transpose(1, 2)).transpose(1, 2)
        for block, s in zip(self.blocks, convs[1:]):
            h = block(h, s)
        return self.final_norm(h.transpose(1, 2))


class ISTFTDecoder(CausalConvNeXtBody):
    """Latent [B, dimension, T] at ``input_rate`` Hz -> waveform [B, 1, T * hop_length * upsample]."""

    def __init__(
        self,
        dimension: int,
        input_rate: float,
        sample_rate: int,
        dim: int = 256,
        intermediate_dim: int = 768,
        num_blocks: int = 4,
        kernel_size: int = 7,
        n_fft: int = 960,
        hop_length: int = 240,
        **_ignored,
    ) -> None:
        super().__init__()
        frames_per_input = sample_rate / hop_length / input_rate
        if abs(frames_per_input - round(frames_per_input)) > 1e-6 or n_fft < hop_length or n_fft % 2:
            raise ValueError(
                f"istft decoder: hop {hop_length} at {sample_rate} Hz must divide the latent's frames "
                f"({input_rate} Hz) into whole STFT frames, and n_fft {n_fft} must be even and >= the hop"
            )
        self.upsample = int(round(frames_per_input))
        self.dim, self.n_fft, self.hop_length = dim, n_fft, hop_length
        self.delay = n_fft - hop_length
        # kernel = stride: each latent step becomes `upsample` frames with no overlap (causal, stateless)
        self.unfold = nn.Linear(dimension, self.upsample * dim)
        self._build_body(dim, intermediate_dim, kernel_size, num_blocks)
        self.out = nn.Linear(dim, n_fft + 2)  # log-magnitude and phase of n_fft / 2 + 1 bins
        self._window: torch.Tensor | None = None  # made on first use, on the input's device (see window())

    def window(self, like: torch.Tensor) -> torch.Tensor:
        """The synthesis window divided by the steady-state sum of squared windows over overlapping frames
        (Vocos divides by that envelope). Not a buffer: a model built on ``meta`` and loaded from a file
        (which holds no window) would keep a meta buffer."""
        w = self._window
        if w is None or w.device != like.device or w.dtype != like.dtype:
            w = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
            w = (w / ((w**2).sum() / self.hop_length)).to(device=like.device, dtype=like.dtype)
            self._window = w
        return w

    def new_state(self, batch_size: int) -> ISTFTState:
        like = self.out.weight
        tail = torch.zeros(batch_size, self.delay, device=like.device, dtype=like.dtype)
        return ISTFTState(self.body_states(batch_size), tail)

    def frames(self, x: torch.Tensor, state: ISTFTState | None = None) -> torch.Tensor:
        """Latent [B, dimension, T] -> windowed time frames [B, T * upsample, n_fft]."""
        b, _, t = x.shape
        h = self.unfold(x.transpose(1, 2)).reshape(b, t * self.upsample, self.dim).transpose(1, 2)
        logmag, phase = self.out(self.body(h, None if state is None else state.convs)).chunk(2, dim=-1)
        mag = torch.exp(logmag).clamp(max=1e2)
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1)
        return frames * self.window(frames)

    def overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, n, n_fft] -> [B, (n - 1) * hop + n_fft]: frame i laid at i * hop."""
        n = frames.shape[1]
        length = (n - 1) * self.hop_length + self.n_fft
        return F.fold(
            frames.transpose(1, 2),
            output_size=(1, length),
            kernel_size=(1, self.n_fft),
            stride=(1, self.hop_length),
        ).reshape(frames.shape[0], length)

    def forward(self, x: torch.Tensor, state: ISTFTState | None = None) -> torch.Tensor:
        ola = self.overlap_add(self.frames(x, state))
        n = ola.shape[-1] - self.delay  # complete samples once these frames are in
        if state is None:  # aligned with the input: frame t ends at (t + 1) * hop
            return ola[:, self.delay :].unsqueeze(1)
        ola = torch.cat([ola[:, : self.delay] + state.tail, ola[:, self.delay :]], dim=-1)
        state.tail = ola[:, n:].clone()
        return ola[:, :n].unsqueeze(1)

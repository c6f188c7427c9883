"""SEANet encoder and decoder, causal and streamable, with moshi's module tree (``model.N...``).

The stream state of a container is the list of its children's states (None for stateless layers).
"""

from __future__ import annotations

import torch
from torch import nn

from .conv import StreamingConv1d, StreamingConvTranspose1d


def _new_states(layers: nn.Sequential, batch_size: int) -> list:
    return [layer.new_state(batch_size) if hasattr(layer, "new_state") else None for layer in layers]


def _run(layers: nn.Sequential, x: torch.Tensor, states: list | None) -> torch.Tensor:
    for i, layer in enumerate(layers):
        if hasattr(layer, "new_state"):
            x = layer(x, None if states is None else states[i])
        else:
            x = layer(x)
    return x


class SEANetResnetBlock(nn.Module):
    """ELU -> conv(k, dilation) -> ELU -> conv(1), plus identity skip (``true_skip``)."""

    def __init__(
        self,
        dim: int,
        kernel_sizes: tuple[int, ...] = (3, 1),
        dilations: tuple[int, ...] = (1, 1),
        compress: int = 2,
        norm: str = "none",
        pad_mode: str = "constant",
        true_skip: bool = True,
    ) -> None:
        super().__init__()
        if not true_skip:
            raise ValueError("SEANet blocks with a conv shortcut (true_skip=False) are not supported")
        hidden = dim // compress
        block: list[nn.Module] = []
        for i, (kernel, dilation) in enumerate(zip(kernel_sizes, dilations)):
            in_chs = dim if i == 0 else hidden
            out_chs = dim if i == len(kernel_sizes) - 1 else hidden
            block += [
                nn.ELU(alpha=1.0),
                StreamingConv1d(in_chs, out_chs, kernel, dilation=dilation, norm=norm, pad_mode=pad_mode),
            ]
        self.block = nn.Sequential(*block)
        self.shortcut = nn.Identity()

    def new_state(self, batch_size: int) -> list:
        return _new_states(self.block, batch_size)

    def forward(self, x: torch.Tensor, state: list | None = None) -> torch.Tensor:
        return x + _run(self.block, x, state)


class SEANetEncoder(nn.Module):
    """Waveform [B, C, T] -> latent [B, dimension, T / hop_length]."""

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 128,
        n_filters: int = 32,
        n_residual_layers: int = 1,
        ratios: list[int] = (8, 5, 4, 2),
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        dilation_base: int = 2,
        norm: str = "none",
        pad_mode: str = "constant",
        true_skip: bool = True,
        compress: int = 2,
        **_ignored,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.dimension = dimension
        self.ratios = list(reversed(list(ratios)))
        self.hop_length = 1
        for r in self.ratios:
            self.hop_length *= r
        mult = 1
        layers: list[nn.Module] = [
            StreamingConv1d(channels, n_filters, kernel_size, norm=norm, pad_mode=pad_mode)
        ]
        for ratio in self.ratios:
            for j in range(n_residual_layers):
                layers.append(
                    SEANetResnetBlock(
                        mult * n_filters,
                        kernel_sizes=(residual_kernel_size, 1),
                        dilations=(dilation_base**j, 1),
                        compress=compress,
                        norm=norm,
                        pad_mode=pad_mode,
                        true_skip=true_skip,
                    )
                )
            layers += [
                nn.ELU(alpha=1.0),
                StreamingConv1d(
                    mult * n_filters,
                    mult * n_filters * 2,
                    kernel_size=ratio * 2,
                    stride=ratio,
                    norm=norm,
                    pad_mode=pad_mode,
                ),
            ]
            mult *= 2
        layers += [
            nn.ELU(alpha=1.0),
            StreamingConv1d(mult * n_filters, dimension, last_kernel_size, norm=norm, pad_mode=pad_mode),
        ]
        self.model = nn.Sequential(*layers)

    def new_state(self, batch_size: int) -> list:
        return _new_states(self.model, batch_size)

    def forward(self, x: torch.Tensor, state: list | None = None) -> torch.Tensor:
        return _run(self.model, x, state)


class SEANetDecoder(nn.Module):
    """Latent [B, dimension, T] -> waveform [B, C, T * hop_length]."""

    def __init__(
        self,
        channels: int = 1,
        dimension: int = 128,
        n_filters: int = 32,
        n_residual_layers: int = 1,
        ratios: list[int] = (8, 5, 4, 2),
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        dilation_base: int = 2,
        norm: str = "none",
        pad_mode: str = "constant",
        true_skip: bool = True,
        compress: int = 2,
        **_ignored,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.dimension = dimension
        self.ratios = list(ratios)
        self.hop_length = 1
        for r in self.ratios:
            self.hop_length *= r
        mult = 2 ** len(self.ratios)
        layers: list[nn.Module] = [
            StreamingConv1d(dimension, mult * n_filters, kernel_size, norm=norm, pad_mode=pad_mode)
        ]
        for ratio in self.ratios:
            layers += [
                nn.ELU(alpha=1.0),
                StreamingConvTranspose1d(
                    mult * n_filters, mult * n_filters // 2, kernel_size=ratio * 2, stride=ratio, norm=norm
                ),
            ]
            for j in range(n_residual_layers):
                layers.append(
                    SEANetResnetBlock(
                        mult * n_filters // 2,
                        kernel_sizes=(residual_kernel_size, 1),
                        dilations=(dilation_base**j, 1),
                        compress=compress,
                        norm=norm,
                        pad_mode=pad_mode,
                        true_skip=true_skip,
                    )
                )
            mult //= 2
        layers += [
            nn.ELU(alpha=1.0),
            StreamingConv1d(n_filters, channels, last_kernel_size, norm=norm, pad_mode=pad_mode),
        ]
        self.model = nn.Sequential(*layers)

    def new_state(self, batch_size: int) -> list:
        return _new_states(self.model, batch_size)

    def forward(self, x: torch.Tensor, state: list | None = None) -> torch.Tensor:
        return _run(self.model, x, state)

"""EnCodec's multi-scale STFT discriminator and the adversarial + feature-matching losses of a codec recipe.

The discriminator follows audiocraft's ``MultiScaleSTFTDiscriminator`` (EnCodec, Mimi): per scale a
complex STFT (real and imaginary parts as two channels, normalised, no centring), 2-D convolutions with
kernels (3, 9) strided along frequency, dilated 1, 2, 4 along time, weight-normalised, LeakyReLU 0.2; three
scales, windows 1024 / 2048 / 512 at a quarter-window hop. The losses are DAC's (least squares, feature
matching as absolute L1 over every layer of every scale), with DAC's weights relative to its mel loss
(mel 15, adversarial 1, feature matching 2), since the trainer has no loss balancer: here beside a mel
weight of 1, adversarial 1/15 and feature matching 2/15 (``CodecRecipe.adv_weight``, ``feat_weight``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

STFT_SCALES = ((1024, 256), (2048, 512), (512, 128))  # (window = n_fft, hop)


class STFTDiscriminator(nn.Module):
    """One scale: complex STFT -> 2-D conv stack -> logits [B, 1, T', F']; every layer's output kept."""

    def __init__(
        self, n_fft: int, hop: int, filters: int = 32, dilations: tuple[int, ...] = (1, 2, 4)
    ) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        k = (3, 9)  # (time, frequency)
        convs = [weight_norm(nn.Conv2d(2, filters, k, padding=(1, 4)))]
        for d in dilations:
            convs.append(
                weight_norm(nn.Conv2d(filters, filters, k, stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
            )
        convs.append(weight_norm(nn.Conv2d(filters, filters, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(filters, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(x.reshape(-1, x.shape[-1]), self.n_fft, self.hop, window=self.window, center=False,
                          normalized=True, return_complex=True)  # fmt: skip
        z = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, frames, bins]
        feats = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), 0.2)
            feats.append(z)
        return self.post(z), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, scales: tuple[tuple[int, int], ...] = STFT_SCALES, filters: int = 32) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, h, filters) for n, h in scales)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(x) for d in self.discriminators]


def discriminator_loss(
    disc: MultiScaleSTFTDiscriminator, real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """Least squares: real toward 1, generated toward 0 (the generator's output detached)."""
    loss = real.new_zeros(())
    for (lr, _), (lf, _) in zip(disc(real), disc(fake.detach())):
        loss = loss + (1 - lr).pow(2).mean() + lf.pow(2).mean()
    return loss / len(disc.discriminators)


def generator_losses(
    disc: MultiScaleSTFTDiscriminator, real: torch.Tensor, fake: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial: generated toward 1, feature matching: L1 between every layer's features of the real
    and the generated audio), each a mean over scales; no gradient reaches the discriminator's weights
    through these (its parameters are not stepped by the generator's optimizer)."""
    adv, feat = real.new_zeros(()), real.new_zeros(())
    with torch.no_grad():
        real_out = disc(real)
    for (_, fr), (lf, ff) in zip(real_out, disc(fake)):
        adv = adv + (1 - lf).pow(2).mean()
        feat = feat + sum(F.l1_loss(b, a) for a, b in zip(fr, ff)) / len(ff)
    n = len(disc.discriminators)
    return adv / n, feat / n

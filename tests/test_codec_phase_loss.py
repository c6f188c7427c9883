"""The phase-derivative loss (recipe istft-decoder-phase): zero on the input itself, blind to a small time
shift, large on the input's magnitudes with random phase, finite gradients even for a silent output."""

from __future__ import annotations

import math

import torch

from vemi_eval.training.codec_losses import PhaseDerivativeLoss
from vemi_eval.training.codec_recipes import named_recipes


def _speechlike(seconds: float = 1.0, sr: int = 24000) -> torch.Tensor:
    torch.manual_seed(0)
    t = torch.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * torch.sin(2 * math.pi * 2 * t)  # a gliding harmonic voice with an envelope
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sr
    x = sum(torch.sin(k * phase) / k for k in range(1, 20)) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    return (0.1 * x + 0.001 * torch.randn_like(x)).view(1, 1, -1)


def test_zero_on_the_input_blind_to_a_shift_large_on_random_phase():
    loss = PhaseDerivativeLoss()
    x = _speechlike()
    assert loss(x, x).item() < 1e-6
    shifted = torch.nn.functional.pad(x, (3, 0))[..., : x.shape[-1]]  # 3 samples late
    spec = loss.spectrum(x.view(1, -1))
    torch.manual_seed(1)
    random_phase = spec.abs() * torch.exp(1j * 2 * math.pi * torch.rand(spec.shape))
    scrambled = torch.istft(random_phase, 960, 240, window=loss.window, length=x.shape[-1]).view(1, 1, -1)
    far = loss(scrambled, x).item()
    assert far > 0.3  # (measured 0.41: the STFT of a random-phase iSTFT is partly coherent again)
    assert loss(shifted, x).item() < 0.01 * far  # (measured 0.0008)


def test_gradient_is_finite_for_a_silent_output():
    loss = PhaseDerivativeLoss()
    y = torch.zeros(1, 1, 24000, requires_grad=True)
    value = loss(y, _speechlike())
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(y.grad).all()


def test_the_phase_recipe_is_the_decoder_recipe_plus_the_phase_term():
    recipes = named_recipes()
    phase, plain = recipes["istft-decoder-phase"], recipes["istft-decoder"]
    assert phase.phase_weight == 1.0 and plain.phase_weight == 0.0
    assert phase.train_parts == "decoder"  # its codes, and the LM that reads them, stay
    assert phase.digest() != plain.digest()

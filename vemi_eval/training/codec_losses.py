"""The codec trainer's objective: multi-scale mel and STFT losses, the frame-level term, and the recipe
options' terms (ERVQ, semantic distillation, the MS-STFT discriminator) taken from taps on the quantizer.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from reference_model.codec import MimiCodec

from .adversarial import (
    STFT_SCALES,
    MultiScaleSTFTDiscriminator,
    discriminator_loss,
    generator_losses,
)
from .codec_recipes import MEL_SCALES, CodecRecipe
from .ervq import balance_loss, decorrelation_loss, level_inputs, reanchor_all, soft_assignments
from .semantic import SemanticHead, WhisperTeacher, distill_loss


def frame_level_loss(y: torch.Tensor, x: torch.Tensor, frame: int = 480) -> torch.Tensor:
    """L1 between the log10 energies of ``frame``-sample frames (20 ms at 24 kHz) of output and input:
    the decoded level and envelope, which spectral L1 losses let sink (see ``named_recipes``)."""
    n = (x.shape[-1] // frame) * frame

    def log_energy(a: torch.Tensor) -> torch.Tensor:
        return torch.log10(a[..., :n].reshape(a.shape[0], -1, frame).pow(2).mean(-1) + 1e-6)

    return F.l1_loss(log_energy(y), log_energy(x))


def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """HTK-style triangular mel filters [n_mels, n_fft // 2 + 1] up to Nyquist."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        fb[i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)
    return torch.tensor(fb, dtype=torch.float32)


class MultiScaleMelLoss(torch.nn.Module):
    """Mel-spectrogram L1 at several resolutions.

    ``kind="lin+log"``: L1 on linear and on natural-log mel (recipe 1). ``kind="dac-log10"``: L1 on
    log10 mel clamped at 1e-5 (descript-audio-codec's MelSpectrogramLoss with mag_weight 0): the clamp
    has no gradient where the output's mel is below 1e-5, so a decoder that starts (or falls) 20 dB low
    stays there (seen: level -12 dB and the loss flat from step 250 to 2,000). ``kind="log10"``: L1 on
    log10(mel + 1e-5), smooth everywhere (recipe 2)."""

    def __init__(self, sample_rate: int, scales=MEL_SCALES, kind: str = "lin+log") -> None:
        super().__init__()
        if kind not in ("lin+log", "dac-log10", "log10"):
            raise ValueError(f"unknown mel loss {kind!r}")
        self.kind = kind
        self.scales = tuple(tuple(s) for s in scales)
        for n_fft, n_mels in self.scales:
            self.register_buffer(f"fb_{n_fft}", _mel_filterbank(sample_rate, n_fft, n_mels))
            self.register_buffer(f"win_{n_fft}", torch.hann_window(n_fft))

    def mel(self, x: torch.Tensor, n_fft: int) -> torch.Tensor:
        spec = torch.stft(
            x, n_fft, hop_length=n_fft // 4, window=getattr(self, f"win_{n_fft}"), center=True,
            return_complex=True,
        ).abs()  # fmt: skip
        return torch.matmul(getattr(self, f"fb_{n_fft}"), spec)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y, x = y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1])
        total = y.new_zeros(())
        for n_fft, _ in self.scales:
            my, mx = self.mel(y, n_fft), self.mel(x, n_fft)
            if self.kind == "dac-log10":
                total = total + F.l1_loss(torch.log10(my.clamp_min(1e-5)), torch.log10(mx.clamp_min(1e-5)))
            elif self.kind == "log10":
                total = total + F.l1_loss(torch.log10(my + 1e-5), torch.log10(mx + 1e-5))
            else:
                total = total + F.l1_loss(my, mx) + F.l1_loss(torch.log(my + 1e-5), torch.log(mx + 1e-5))
        return total / len(self.scales)


# auraloss's MultiResolutionSTFTLoss defaults: (n_fft, hop, window length)
STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


class MultiResolutionSTFTLoss(torch.nn.Module):
    """Linear-frequency STFT loss at several resolutions, as auraloss's ``STFTLoss`` defines it: spectral
    convergence ||S_x| - |S_y||_F / ||S_x||_F plus the L1 of log magnitudes (|S| = sqrt(max(re^2 + im^2,
    1e-8))), averaged over resolutions. Beside the mel loss it weighs
    the high bins a mel scale compresses, where consonants live."""

    def __init__(self, resolutions=STFT_RESOLUTIONS) -> None:
        super().__init__()
        self.resolutions = tuple(tuple(r) for r in resolutions)
        for n_fft, _hop, win in self.resolutions:
            self.register_buffer(f"win_{n_fft}", torch.hann_window(win))

    def magnitude(self, x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
        spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=getattr(self, f"win_{n_fft}"),
                          center=True, return_complex=True)  # fmt: skip
        return torch.sqrt((spec.real**2 + spec.imag**2).clamp_min(1e-8))

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y, x = y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1])
        total = y.new_zeros(())
        for n_fft, hop, win in self.resolutions:
            my, mx = self.magnitude(y, n_fft, hop, win), self.magnitude(x, n_fft, hop, win)
            sc = torch.linalg.norm(mx - my) / torch.linalg.norm(mx).clamp_min(1e-8)
            total = total + sc + F.l1_loss(torch.log(my), torch.log(mx))
        return total / len(self.resolutions)


def _neighbours(s: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each element of ``s`` from the second on along ``dim``, and the one before it."""
    n = s.shape[dim] - 1
    return s.narrow(dim, 1, n), s.narrow(dim, 0, n)


# the iSTFT decoder's own grid (reference_model/codec/istft.py: Hann, n_fft 960, hop 240 at 24 kHz)
PHASE_RESOLUTION = (960, 240)


class PhaseDerivativeLoss(torch.nn.Module):
    """What a decoder's phase gets wrong, in APNet's (Ai & Ling 2023) anti-wrapped phase derivatives: the
    instantaneous frequency (phase advance from one STFT frame to the next, per bin) and the group delay
    (phase step from one bin to the next, per frame), output against input. Both are blind to a constant
    time shift (instantaneous frequency exactly, group delay up to a constant of omega x lag), which
    APNet's third term, the instantaneous phase itself, is not; a codec's output may sit a few samples off
    its input, so that term is left out. Anti-wrapping is done on unit phasors: for a derivative d,
    1 - cos(d_out - d_in) (zero when equal, 2 at opposite phase; smooth, no branch cut). Each bin is
    weighted by the input's magnitudes at both ends of its difference, so silent bins, whose phase is
    noise, count for nothing; output bins far below ``floor`` tend to a phasor of zero (a penalty of 1,
    with a bounded gradient)."""

    def __init__(self, resolution: tuple[int, int] = PHASE_RESOLUTION, floor: float = 1e-4) -> None:
        super().__init__()
        self.n_fft, self.hop = resolution
        self.floor = floor
        self.register_buffer("window", torch.hann_window(self.n_fft))

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stft(
            x, self.n_fft, hop_length=self.hop, window=self.window, center=True, return_complex=True
        )  # fmt: skip  [B, bins, frames]

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y, x = y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1])
        sy, sx = self.spectrum(y), self.spectrum(x)
        uy = sy / torch.sqrt(sy.real**2 + sy.imag**2 + self.floor**2)
        mx = sx.abs().detach()
        ux = (sx / mx.clamp_min(1e-12)).detach()
        total = y.new_zeros(())
        for dim in (-1, -2):  # along frames: instantaneous frequency; along bins: group delay
            (uy1, uy0), (ux1, ux0), (mx1, mx0) = (_neighbours(t, dim) for t in (uy, ux, mx))
            w = mx1 * mx0
            err = 1.0 - (uy1 * uy0.conj() * (ux1 * ux0.conj()).conj()).real  # 1 - cos(d_out - d_in)
            total = total + (w * err).sum() / w.sum().clamp_min(1e-12)
        return total / 2


class QuantizerTaps:
    """What each RVQ (``rvq_first``, ``rvq_rest``) got and gave in the last training pass, caught by forward
    hooks so the codec's forward stays the plain one: {name: (latent [B, C, T], output [B, C, T], codes
    [B, n, T])}. ``take()`` hands them over and forgets them (a pass with one codebook skips rvq_rest)."""

    def __init__(self, codec: MimiCodec) -> None:
        self.seen: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.rvqs = {"rvq_first": codec.quantizer.rvq_first, "rvq_rest": codec.quantizer.rvq_rest}
        self._handles = [
            rvq.register_forward_hook(
                lambda _m, args, out, name=name: self.seen.__setitem__(name, (args[0], out[0], out[1]))
            )
            for name, rvq in self.rvqs.items()
        ]

    def take(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        seen, self.seen = self.seen, {}
        return seen

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class OptionParts:
    """The recipe options' training-only parts beside the codec: the quantizer taps, and for
    semantic-distill the teacher and the projection head (its weights go into the training state, not
    into the codec's weights)."""

    def __init__(self, recipe: CodecRecipe, codec: MimiCodec, threads: int, device: str) -> None:
        self.recipe = recipe
        self.taps = QuantizerTaps(codec)
        self.teacher = self.head = self.disc = self.disc_opt = None
        if recipe.adv_weight or recipe.feat_weight:
            self.disc = MultiScaleSTFTDiscriminator().to(device)
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=recipe.disc_lr, betas=recipe.betas)
        if recipe.semantic_weight:
            self.teacher = WhisperTeacher(codec.sample_rate, codec.frame_size, threads=threads)
            dim = int(codec.config.quantizer.get("output_dimension") or codec.config.quantizer["dimension"])
            self.head = SemanticHead(dim, self.teacher.info.dim).to(device)

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.head.parameters()) if self.head is not None else []

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"semantic_head.{k}": v for k, v in self.head.state_dict().items()} if self.head else {}
        if self.disc is not None:  # its weights and AdamW moments (param groups: fixed by the recipe)
            out.update({f"disc.{k}": v for k, v in self.disc.state_dict().items()})
            for idx, st in self.disc_opt.state_dict()["state"].items():
                out.update({f"disc_optim.{idx}.{name}": torch.as_tensor(v) for name, v in st.items()})
        return out

    def load_state_tensors(self, extra: dict[str, torch.Tensor]) -> None:
        def under(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix)}

        if self.head is not None:
            self.head.load_state_dict(under("semantic_head."))
        if self.disc is not None:
            self.disc.load_state_dict(under("disc."))
            state: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in under("disc_optim.").items():
                idx, name = k.split(".", 1)
                state.setdefault(int(idx), {})[name] = v
            groups = self.disc_opt.state_dict()["param_groups"]
            self.disc_opt.load_state_dict({"state": state, "param_groups": groups})

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.teacher is not None:
            out["semantic_teacher"] = asdict(self.teacher.info)
        if self.disc is not None:
            n = sum(p.numel() for p in self.disc.parameters())
            out["discriminator"] = {"kind": "MS-STFT (EnCodec)", "scales": STFT_SCALES, "parameters": n,
                                    "loss": "least squares + feature matching L1 (DAC)"}  # fmt: skip
        return out

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The options' loss terms on the last pass over ``x`` (reconstruction ``y``; weighted by
        ``weights``), each named; re-anchoring (ERVQ) and the discriminator's own step happen here too."""
        r, seen = self.recipe, self.taps.take()
        terms: dict[str, torch.Tensor] = {}
        if r.balance_weight or r.decorrelation_weight or r.reanchor_sharpness:
            bal, dec = [], []
            for name, (latent, _, codes) in seen.items():
                rvq = self.taps.rvqs[name]
                levels = level_inputs(rvq, latent, codes)
                probs = (
                    soft_assignments(levels, rvq, r.soft_temperature)
                    if r.balance_weight or r.decorrelation_weight
                    else None
                )
                if r.balance_weight:
                    bal.append(balance_loss(levels, rvq, r.soft_temperature, probs))
                if r.decorrelation_weight and len(levels) > 1:
                    dec.append(decorrelation_loss(levels, rvq, r.soft_temperature, probs))
                if r.reanchor_sharpness:
                    reanchor_all(levels, rvq, r.reanchor_sharpness)
            if bal:
                terms["balance"] = torch.stack(bal).mean()
            if dec:
                terms["decorrelation"] = torch.stack(dec).mean()
        if self.head is not None:
            terms["semantic"] = distill_loss(self.head, seen["rvq_first"][1], self.teacher.features(x))
        if self.disc is not None:
            d_loss = discriminator_loss(self.disc, x, y)
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), r.grad_clip)
            self.disc_opt.step()
            for p in self.disc.parameters():  # the generator's terms train the decoder only
                p.requires_grad_(False)
            terms["adv"], terms["feat"] = generator_losses(self.disc, x, y)
            for p in self.disc.parameters():
                p.requires_grad_(True)
            terms["disc"] = d_loss.detach()  # logged, weight 0
        return terms

    def weights(self) -> dict[str, float]:
        r = self.recipe
        return {
            "balance": r.balance_weight,
            "decorrelation": r.decorrelation_weight,
            "semantic": r.semantic_weight,
            "adv": r.adv_weight,
            "feat": r.feat_weight,
            "disc": 0.0,
        }

    def remove(self) -> None:
        self.taps.remove()

"""Training recipe of the "tiny" codec preset, on CPU (or a GPU where one is given).

Recipe 2 (the diagnosis behind it is in docs/results.md; the bundled weights were made with
``--recipe v1-continue`` from recipe 1's, see their JSON sidecar):

* Data: the codec corpus (``vemi_eval.data.codec_corpus``): espeak-ng's English voices x ~90 variants at
  random pitch and rate, and 10 festival voices (recorded human speakers, 8 languages), thousands of
  random sentences; whole voices held out of training for evaluation.
* Losses: DAC's mel loss scales (L1 on log10 mel at 7 scales, windows 32..2048; smooth log10(mel + 1e-5)
  instead of DAC's clamp, whose zero gradient below 1e-5 froze a quiet decoder), a small waveform L1
  (EnCodec's 0.1) and the RVQ commitment, relative to the latent's energy.
* Initialisation: every conv rescaled on a real batch so activations keep a unit-ish scale and the
  decoder starts at the input's level (LSUV); PyTorch's default init loses ~10x through each half.
* Codebooks learn by EMA with k-means initialisation and dead-code restarts (as Mimi); quantizer dropout
  (8 codebooks half of the time, else uniform in [1, max]); half of the items bypass the quantizer
  (Mimi), so the decoder learns from the clean latent too.
* Weight normalisation is available (``weight_norm``; folded into the weights when they are written, so
  the saved keys stay moshi's) but off: here it let the activations collapse (see ``CodecRecipe``).
* No adversarial loss (not enough CPU time for it to pay off).

The learning rate follows the fraction of the wall-time budget spent (cosine after a warmup), so a run
of ``minutes`` ends annealed whatever the machine's speed. Every ``checkpoint_every_s`` the full training
state (weights, EMA codebooks, optimizer moments, step, elapsed time, RNG states) is written atomically
beside the output as safetensors + JSON; a killed run started again with the same arguments resumes
from it. The final weights and their JSON sidecar (recipe, data hash, steps, wall time, held-out quality
per engine and number of codebooks) are written at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from torch.nn.utils import parametrize

from reference_model.checkpoint import load_into
from reference_model.codec import MimiCodec, codec_config
from reference_model.errors import CheckpointError

from ..storage import file_sha256
from .interrupt import StopRequest, end_of_loop
from .state import git_commit, load_training_state, save_training_state, write_sidecar, write_weights

MEL_SCALES = ((256, 40), (512, 64), (1024, 80), (2048, 128))  # recipe 1's (n_fft, n_mels), hop n_fft / 4
DAC_MEL_SCALES = ((32, 5), (64, 10), (128, 20), (256, 40), (512, 80), (1024, 160), (2048, 320))
EVAL_CODEBOOKS = (1, 2, 4, 8, 16, 32)


@dataclass
class CodecRecipe:
    """Everything that decides what a run learns (hashed: a resume refuses a different recipe)."""

    preset: str = "tiny"
    data: str = "codec_corpus"  # or "espeak_corpus" (recipe 1's 288 utterances)
    batch_size: int = 8
    segment_frames: int = 6  # 0.48 s crops (DAC: 0.38 s)
    lr: float = 6e-4
    betas: tuple[float, float] = (0.8, 0.99)
    warmup_steps: int = 200
    mel: str = "log10"  # or "dac-log10" (clamped: dead below 1e-5), "lin+log" (recipe 1)
    mel_scales: tuple[tuple[int, int], ...] = DAC_MEL_SCALES
    mel_weight: float = 1.0
    wave_weight: float = 0.1
    commit_weight: float = 0.25
    commitment: str = "relative"  # commitment loss / latent energy (see the quantizer); "absolute": recipe 1
    bypass_rate: float = 0.5
    # Off: with weight norm the activations shrank 200x in 1,000 steps (each strided conv learned directions
    # that cancel, at a fixed norm), the ELUs ran in their linear range and the latent's std fell to 0.005.
    weight_norm: bool = False
    init: str = "unit-variance"  # data-dependent rescaling of every conv (see below); or "default"
    grad_clip: float = 1.0
    gain_jitter_db: float = 6.0
    quantizer_dropout: str = "n_q=8 with p=0.5, else uniform in [1, max]"
    codebooks: str = "EMA decay 0.99, k-means init, dead codes (<10% of uniform usage) re-initialised"
    schedule: str = "linear warmup, then cosine over the fraction of the wall-time budget, floor 5%"
    # Recipe options (vemi_eval/training/recipes.py, ``--option``) and the settings they turn on.
    options: tuple[str, ...] = ()
    balance_weight: float = 0.0  # ervq: code-balancing (usage entropy) loss
    decorrelation_weight: float = 0.0  # ervq: inter-codebook decorrelation loss
    soft_temperature: float = 1.0  # ervq: soft assignments' temperature (x mean nearest squared distance)
    reanchor_sharpness: float = 0.0  # ervq: online re-anchoring of rarely used codes (0: off)
    semantic_weight: float = 0.0  # semantic-distill: first codebook -> whisper encoder, cosine distance
    multi_rate_strides: tuple[int, ...] = ()  # multi-rate: the acoustic levels' strides (codec structure)
    # "decoder": the encoder side (SEANet encoder, its transformer, downsampling, quantizer and its EMA
    # codebooks) frozen, so every code stays what it was and an LM trained on them stays valid.
    train_parts: str = "all"
    level_weight: float = 0.0  # L1 on 20 ms frames' log10 energy, output vs input (the decoded level)
    stft_weight: float = 0.0  # linear-frequency multi-resolution STFT loss (MultiResolutionSTFTLoss)
    # MS-STFT discriminator (training/adversarial.py): its least-squares and feature-matching terms' weights
    adv_weight: float = 0.0
    feat_weight: float = 0.0
    disc_lr: float = 1e-4

    def digest(self) -> str:
        d = asdict(self)
        for key, off in _OPTION_FIELDS.items():  # absent while unused: states of before still resume
            if d.get(key) == off:
                d.pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# Fields added with the recipe options, at their "off" values.
_OPTION_FIELDS: dict[str, Any] = {
    "options": (),
    "balance_weight": 0.0,
    "decorrelation_weight": 0.0,
    "soft_temperature": 1.0,
    "reanchor_sharpness": 0.0,
    "semantic_weight": 0.0,
    "multi_rate_strides": (),
    "train_parts": "all",
    "level_weight": 0.0,
    "stft_weight": 0.0,
    "adv_weight": 0.0,
    "feat_weight": 0.0,
    "disc_lr": 1e-4,
}

# What each codec recipe option sets (declared for the registry in vemi_eval/training/recipes.py).
CODEC_OPTIONS: dict[str, dict[str, Any]] = {
    # ERVQ's weights are its paper's order of magnitude beside a mel loss of ~1; sharpness 10: a code at a
    # tenth of the uniform usage moves 37% of the way to its nearest feature per step, a uniform one 0.005%.
    "ervq": {"balance_weight": 0.1, "decorrelation_weight": 0.1, "soft_temperature": 1.0,
             "reanchor_sharpness": 10.0},
    # Mimi weighs its WavLM distillation like its other terms; beside a mel loss of ~1.5, 1.0 here.
    "semantic-distill": {"semantic_weight": 1.0},
    # SNAC-style: the first acoustic level at a quarter of the frame rate (3.125 Hz), the second at half,
    # the rest at 12.5 Hz: 8 codebooks cost 0.93 kbps instead of 1.1; a streamed encoder lags 3 frames more.
    "multi-rate": {"multi_rate_strides": (4, 2)},
}  # fmt: skip


def with_options(recipe: CodecRecipe, names: list[str] | tuple[str, ...]) -> CodecRecipe:
    """``recipe`` with the named recipe options turned on (unknown name: ValueError, one line)."""
    unknown = [n for n in names if n not in CODEC_OPTIONS]
    if unknown:
        raise ValueError(
            f"unknown codec recipe option {unknown[0]!r} (known: {', '.join(sorted(CODEC_OPTIONS))})"
        )
    if "ervq" in names and "multi-rate" in names:  # ERVQ's residual retrace knows one rate only
        raise ValueError("codec recipe options 'ervq' and 'multi-rate' cannot be combined")
    changes: dict[str, Any] = {}
    for n in names:
        changes.update(CODEC_OPTIONS[n])
    return dataclasses.replace(recipe, options=tuple(sorted(set(recipe.options) | set(names))), **changes)


SIX_MEL_SCALES = ((64, 16), (128, 32), (256, 40), (512, 64), (1024, 80), (2048, 128))


def named_recipes() -> dict[str, CodecRecipe]:
    """``v2``: the from-scratch recipe above. ``v1-continue``: recipe 1's loss family (L1 on linear and
    log mel at 6 scales, absolute commitment 1.0) for continuing the bundled weights on the codec corpus.
    The linear-mel term is what keeps the decoded level up: log-mel L1 alone is minimised, while the
    spectral detail cannot be predicted yet, by the per-bin *median* log energy, i.e. a quiet, smeared
    output (recipe-2 runs fell to -12 dB within 500 steps, from a start at the input's level)."""
    replace = dataclasses.replace
    v1_continue = CodecRecipe(
        mel="lin+log",
        mel_scales=SIX_MEL_SCALES,
        commitment="absolute",
        commit_weight=1.0,
        wave_weight=0.1,
        lr=5e-4,
        warmup_steps=100,
        init="default",
    )
    decoder_only = replace(
        v1_continue, commit_weight=0.0, bypass_rate=0.0, train_parts="decoder", level_weight=1.0
    )
    long_crops = {"batch_size": 2, "segment_frames": 24}
    return {
        "v2": CodecRecipe(),
        "v1-continue": v1_continue,
        # The diagnosis (scripts/codec_diagnosis.py -> reports/training/codec-diagnosis-bundled.json, v3
        # held-out sets): through the unquantized latent the bundled codec scores STOI 0.725 / 0.733 /
        # 0.755, through 8 codebooks 0.717 / 0.725 / 0.746: the autoencoder, not the quantizer, is the limit
        # (hence quality flat beyond 4 codebooks). Train the decoder alone on the codes as they are (no
        # bypass: it only ever decodes quantized latents), with a frame-energy term against the level
        # loss; the tokeniser is unchanged, so the bundled LM stays valid.
        "v1-decoder": decoder_only,
        # v1-decoder with EnCodec's MS-STFT discriminator, DAC's loss weights relative to its mel loss.
        "v1-decoder-gan": replace(decoder_only, lr=2e-4, adv_weight=1 / 15, feat_weight=2 / 15, disc_lr=2e-4),
        # The decoder A/B (issue 31): one frozen tokeniser (the bundled codec's encoder side), crops of 24
        # frames (1.92 s; 2 per step: the 48 frames per step of recipe 2), mel + linear STFT + level losses;
        # only the decoder differs. "ab-seanet": the bundled SEANet decoder, continued; "ab-istft": the
        # causal iSTFT decoder (reference_model/codec/istft.py), new, behind the bundled upsample and
        # decoder transformer.
        "ab-seanet": replace(decoder_only, **long_crops, stft_weight=1.0),
        "ab-istft": replace(decoder_only, **long_crops, stft_weight=1.0, preset="tiny-istft"),
        # After the A/B: the whole codec with the iSTFT decoder (new codes: an LM must be retrained on
        # them), warm from a tiny-istft codec (the A/B's decoder) or a tiny one (fresh decoder), Mimi's
        # quantizer bypass for half of the items, the A/B's crops and losses.
        "istft-full": replace(
            v1_continue, **long_crops, preset="tiny-istft", lr=3e-4, level_weight=1.0, stft_weight=1.0
        ),
    }  # fmt: skip


ENCODER_SIDE = ("encoder", "encoder_transformer", "downsample", "quantizer")


def warm_start_into(codec: MimiCodec, path: Path) -> list[str]:
    """Load ``path`` into ``codec``; returns the top-level modules left at their fresh initialisation.

    Strict, except where the codec's decoder is of another kind than the checkpoint's (a SEANet codec's
    weights starting an iSTFT one): then every key of the codec outside ``decoder.`` must be in the file
    with its shape, and the decoder starts fresh (the recipe's ``train_parts`` says which parts learn)."""
    state, own = load_file(str(path)), codec.state_dict()
    outside = {k: v for k, v in own.items() if not k.startswith("decoder.")}
    wrong = [k for k, v in outside.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(
            f"{path.name} does not hold this codec's encoder side: {wrong[:3]} missing or reshaped"
        )
    same_decoder = {k for k in own if k.startswith("decoder.")} == {
        k for k in state if k.startswith("decoder.")
    }
    if same_decoder:
        load_into(codec, path)
        return []
    codec.load_state_dict({**own, **{k: state[k] for k in outside}}, strict=True)
    return ["decoder"]


def freeze_encoder_side(codec: MimiCodec) -> list[str]:
    """No gradient and eval mode (no EMA codebook updates, no dead-code restarts) for the modules that
    make the codes; returns their names. Called again after every switch to train mode."""
    names = []
    for name in ENCODER_SIDE:
        module = getattr(codec, name, None)
        if module is None:
            continue
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        names.append(name)
    return names


def frame_level_loss(y: torch.Tensor, x: torch.Tensor, frame: int = 480) -> torch.Tensor:
    """L1 between the log10 energies of ``frame``-sample frames (20 ms at 24 kHz) of output and input:
    the decoded level and envelope, which spectral L1 losses let sink (see ``named_recipes``)."""
    n = (x.shape[-1] // frame) * frame

    def log_energy(a: torch.Tensor) -> torch.Tensor:
        return torch.log10(a[..., :n].reshape(a.shape[0], -1, frame).pow(2).mean(-1) + 1e-6)

    return F.l1_loss(log_energy(y), log_energy(x))


def codes_digest(codec: MimiCodec, audio: list[np.ndarray]) -> str:
    """sha256 (16 hex) of the codes of ``audio`` at every codebook: equal digests, same tokeniser."""
    h = hashlib.sha256()
    keep, was_training = codec.num_codebooks, codec.training
    codec.eval()
    codec.set_num_codebooks(codec.max_codebooks)
    with torch.no_grad():
        for a in audio:
            h.update(codec.encode(torch.from_numpy(a).view(1, 1, -1)).numpy().astype(np.int64).tobytes())
    codec.set_num_codebooks(keep)
    codec.train(was_training)
    return h.hexdigest()[:16]


# --- losses -------------------------------------------------------------------------------------
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


# --- weight norm ----------------------------------------------------------------------------------
def _convs(codec: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in codec.modules() if isinstance(m, torch.nn.Conv1d | torch.nn.ConvTranspose1d)]


def add_weight_norm(codec: torch.nn.Module) -> None:
    """Weight-normalise every SEANet/resampling conv for training; not the quantizer's 1x1 projections,
    whose free gain would let the latent's scale run away from the EMA codebooks."""
    skip = {id(m) for m in codec.quantizer.modules()} if hasattr(codec, "quantizer") else set()
    for m in _convs(codec):
        if id(m) not in skip:
            torch.nn.utils.parametrizations.weight_norm(m, "weight", dim=0)


def plain_copy(codec: MimiCodec) -> MimiCodec:
    """A fresh codec with weight norm folded into the weights (moshi's released key layout).

    Not deepcopy + remove_parametrizations: the copy shares the parametrized class with the original, and
    removing the parametrization from it deletes the property from the original too."""
    state = {}
    for k, v in codec.state_dict().items():
        if ".parametrizations.weight." not in k:
            state[k] = v.detach().clone()
    for name, m in codec.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            state[f"{name}.weight"] = m.weight.detach().clone()
    plain = MimiCodec(codec.config)
    plain.load_state_dict(state)
    return plain.to(next(codec.parameters()).device).train(codec.training)


# --- initialisation -------------------------------------------------------------------------------
@torch.no_grad()
def unit_variance_init(codec: MimiCodec, x: torch.Tensor, target_std: float = 0.5) -> dict[str, float]:
    """Data-dependent init (LSUV, Mishkin & Matas 2016) of the SEANet convs and the resampling convs.

    PyTorch's default conv init has a gain of ~0.58 per layer, so at init the activations shrink ~10x
    through the encoder and again through the decoder: the ELUs run in their linear range and the
    decoded level starts 20-40 dB low; Adam then spends thousands of steps growing the weights back.
    Here each conv (in forward order, on a real batch ``x``) is rescaled so its output has
    ``target_std``; the decoder's last conv is rescaled to the input's std instead. Returns the scales."""
    from reference_model.codec.conv import StreamingConv1d, StreamingConvTranspose1d

    down, up = getattr(codec, "downsample", None), getattr(codec, "upsample", None)
    parts = [p for p in (codec.encoder, down, up, codec.decoder) if p is not None]  # forward order
    kinds = StreamingConv1d | StreamingConvTranspose1d
    wrappers = [m for p in parts for m in p.modules() if isinstance(m, kinds)]
    last = codec.decoder.model[-1]
    names = {id(m): n for n, m in codec.named_modules()}
    scales: dict[str, float] = {}
    was = codec.training
    codec.eval()
    for m in wrappers:
        seen: list[torch.Tensor] = []
        handle = m.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
        codec.decode_latent(codec.encode_latent(x))
        handle.remove()
        std = float(seen[0].std())
        goal = float(x.std()) if m is last else target_std
        inner = m.conv.conv if isinstance(m, StreamingConv1d) else m.convtr.convtr
        if std > 0:
            inner.weight.mul_(goal / std)
            if inner.bias is not None:
                inner.bias.mul_(goal / std)
            scales[names[id(m)]] = round(goal / std, 4)
    codec.train(was)
    return scales


# --- data ---------------------------------------------------------------------------------------
class TrainingAudio:
    """Random crops of the training split, with gain jitter."""

    def __init__(self, recipe: CodecRecipe, sample_rate: int, log=print) -> None:
        if recipe.data == "codec_corpus":
            from vemi_eval.data.codec_corpus import codec_corpus, summary

            corpus = codec_corpus("train", sample_rate=sample_rate, log=log)
            self.audio = np.asarray(corpus.audio)
            self.offsets = corpus.offsets
            self.summary = {"corpus": "codec_corpus(split='train')", **summary(corpus)}
        elif recipe.data == "espeak_corpus":
            from vemi_eval.data.corpus import corpus_sha256, espeak_corpus

            utts = espeak_corpus(split="train", sample_rate=sample_rate)
            pcm = [np.clip(u.audio * 32767, -32767, 32767).astype(np.int16) for u in utts]
            self.audio = np.concatenate(pcm)
            self.offsets = np.cumsum([0] + [len(p) for p in pcm])
            self.summary = {"corpus": "espeak_corpus(split='train')", "utterances": len(utts),
                            "sha256": corpus_sha256(utts)}  # fmt: skip
        else:
            raise ValueError(f"unknown codec training data {recipe.data!r}")
        self.recipe = recipe

    def batch(self, rng: np.random.Generator, length: int) -> torch.Tensor:
        b = self.recipe.batch_size
        out = np.zeros((b, 1, length), dtype=np.float32)
        n = len(self.offsets) - 1
        for i in range(b):
            k = int(rng.integers(n))
            lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
            if hi - lo <= length:
                start = int(rng.integers(0, length - (hi - lo) + 1))
                out[i, 0, start : start + hi - lo] = self.audio[lo:hi] / 32767.0
            else:
                s = int(rng.integers(lo, hi - length + 1))
                out[i, 0] = self.audio[s : s + length] / 32767.0
            j = self.recipe.gain_jitter_db
            out[i] *= 10 ** (rng.uniform(-j, j / 2) / 20)
        return torch.from_numpy(out)


def _lr_at(base: float, step: int, frac: float, warmup: int) -> float:
    warm = min(1.0, (step + 1) / warmup)
    return base * warm * max(0.05, 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


# --- evaluation ---------------------------------------------------------------------------------
@dataclass
class Heldout:
    """Held-out utterances of one engine: (name, float32 audio at the codec's rate)."""

    engine: str
    utterances: list[tuple[str, str, np.ndarray]] = field(default_factory=list)  # (id, speaker, audio)


def heldout_sets(sample_rate: int, per_set: int | None = None) -> list[Heldout]:
    """espeak evaluation corpus (the codec suite's data), the codec corpus's held-out espeak variants and
    its held-out festival voices (recorded human speakers)."""
    from vemi_eval.data.codec_corpus import codec_corpus
    from vemi_eval.data.corpus import espeak_corpus

    sets = [Heldout("espeak_eval_corpus")]
    for u in espeak_corpus(split="heldout", sample_rate=sample_rate):
        sets[0].utterances.append((u.id, u.speaker or "?", u.audio.astype(np.float32)))
    held = codec_corpus("heldout", sample_rate=sample_rate)
    for engine in ("espeak", "festival"):
        h = Heldout(f"{engine}_heldout_voices")
        for i, it in enumerate(held.items):
            if it["engine"] == engine:
                h.utterances.append((f"{engine}_{i:04d}", it["speaker"], held.utterance(i)))
        sets.append(h)
    if per_set is not None:
        for h in sets:  # spread over speakers
            step = max(1, len(h.utterances) // per_set)
            h.utterances = h.utterances[::step][:per_set]
    return sets


def _level_db(ref: np.ndarray, out: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(out.astype(np.float64) ** 2)) / np.sqrt(np.mean(ref**2))))


def score_roundtrip(ref: np.ndarray, out: np.ndarray, sample_rate: int) -> tuple[float, float, float]:
    """(PESQ-WB, STOI, decoded level in dB re input) of one decoded utterance, both resampled to 16 kHz."""
    from pesq import pesq
    from pystoi import stoi
    from scipy.signal import resample_poly

    g = math.gcd(16000, sample_rate)
    r16 = resample_poly(ref, 16000 // g, sample_rate // g)
    o16 = resample_poly(out, 16000 // g, sample_rate // g)
    return pesq(16000, r16, o16, "wb"), stoi(r16, o16, 16000), _level_db(ref, out)


def evaluate_codec(codec: MimiCodec, sets: list[Heldout], codebooks=EVAL_CODEBOOKS) -> dict[str, Any]:
    """PESQ-WB, STOI (16 kHz) and decoded level (dB re input) of offline encode/decode, per held-out set
    and number of codebooks: mean over utterances, and per speaker."""
    was_training = codec.training
    codec.eval()
    keep = codec.num_codebooks
    results: dict[str, Any] = {}
    for h in sets:
        per_n: dict[str, Any] = {}
        for n in codebooks:
            codec.set_num_codebooks(n)
            rows = []
            for _uid, spk, ref in h.utterances:
                with torch.no_grad():
                    out = codec.decode(codec.encode(torch.from_numpy(ref).view(1, 1, -1)))[0, 0, : len(ref)]
                rows.append((spk, *score_roundtrip(ref, out.numpy(), codec.sample_rate)))
            arr = np.array([r[1:] for r in rows])
            speakers = sorted({r[0] for r in rows})
            per_n[str(n)] = {
                "pesq_wb": float(arr[:, 0].mean()),
                "stoi": float(arr[:, 1].mean()),
                "level_db": float(arr[:, 2].mean()),
                "n": len(rows),
                "per_speaker_stoi": {s: float(np.mean([r[2] for r in rows if r[0] == s])) for s in speakers},
            }
        results[h.engine] = per_n
    codec.set_num_codebooks(keep)
    codec.train(was_training)
    return results


# --- state ----------------------------------------------------------------------------------------
def _state_path(out_path: Path) -> Path:
    return out_path.with_suffix(".state.safetensors")


def _save_state(
    out_path: Path,
    codec,
    opt,
    step: int,
    elapsed: float,
    rng,
    progress,
    recipe,
    parts=None,
    cpu_s: float = 0.0,
) -> None:
    """Everything a resume needs (vemi_eval/training/state.py: one safetensors file, never pickle)."""
    meta = {
        "recipe_digest": recipe.digest(),
        "step": step,
        "elapsed_s": elapsed,
        "train_cpu_s": cpu_s,
        "numpy_rng": rng.bit_generator.state,
        "progress": progress,
    }
    extra = {"rng.torch": torch.get_rng_state(), **(parts.state_tensors() if parts is not None else {})}
    save_training_state(_state_path(out_path), codec, opt, meta, extra)


def _unfinished_run(out_path: Path, recipe: CodecRecipe) -> dict[str, Any] | None:
    """The sidecar of an unfinished run of ``recipe`` whose weights are at ``out_path`` (written at its last
    checkpoint, and committed so a machine without the state can go on), or None."""
    sidecar = out_path.with_suffix(".json")
    if not (out_path.is_file() and sidecar.is_file()):
        return None
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = info.get("produced_by") == "vemi_eval.training.codec.train_codec"
    same = same and (info.get("recipe") or {}).get("digest") == recipe.digest()
    return info if same and info.get("final") is False and int(info.get("steps", 0)) > 0 else None


def _load_state(out_path: Path, codec, opt, rng, recipe, parts=None) -> tuple[int, float, list, float]:
    st_path = _state_path(out_path)

    def same_recipe(meta: dict[str, Any]) -> None:
        if meta.get("recipe_digest") != recipe.digest():
            raise ValueError(
                f"{st_path} was written by another recipe ({meta.get('recipe_digest')} != {recipe.digest()})"
                ": pass the same options, or --fresh to start over"
            )

    meta, extra = load_training_state(st_path, codec, opt, same_recipe)
    torch.set_rng_state(extra["rng.torch"])
    if parts is not None:
        parts.load_state_tensors(extra)
    rng.bit_generator.state = meta["numpy_rng"]
    return (
        int(meta["step"]),
        float(meta["elapsed_s"]),
        list(meta.get("progress", [])),
        float(meta.get("train_cpu_s", 0)),
    )


# --- recipe options' losses ------------------------------------------------------------------------
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
            from .adversarial import MultiScaleSTFTDiscriminator

            self.disc = MultiScaleSTFTDiscriminator().to(device)
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=recipe.disc_lr, betas=recipe.betas)
        if recipe.semantic_weight:
            from .semantic import SemanticHead, WhisperTeacher

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
            from .adversarial import STFT_SCALES

            n = sum(p.numel() for p in self.disc.parameters())
            out["discriminator"] = {"kind": "MS-STFT (EnCodec)", "scales": STFT_SCALES, "parameters": n,
                                    "loss": "least squares + feature matching L1 (DAC)"}  # fmt: skip
        return out

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The options' loss terms on the last pass over ``x`` (reconstruction ``y``; weighted by
        ``weights``), each named; re-anchoring (ERVQ) and the discriminator's own step happen here too."""
        from .ervq import balance_loss, decorrelation_loss, level_inputs, reanchor_all, soft_assignments

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
            from .semantic import distill_loss

            terms["semantic"] = distill_loss(self.head, seen["rvq_first"][1], self.teacher.features(x))
        if self.disc is not None:
            from .adversarial import discriminator_loss, generator_losses

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


# --- the loop -----------------------------------------------------------------------------------
def train_codec(
    out_path: str | os.PathLike,
    *,
    minutes: float,
    recipe: CodecRecipe | None = None,
    seed: int = 0,
    threads: int = 1,
    device: str = "cpu",
    checkpoint_every_s: float = 300.0,
    eval_every_s: float = 900.0,
    log_every: int = 50,
    log=print,
    evaluate: bool = True,
    init_from: str | os.PathLike | None = None,
    fresh: bool = False,
    audio: TrainingAudio | None = None,
    max_steps: int | None = None,
    clock: str = "wall",
    stop: StopRequest | None = None,
) -> dict[str, Any]:
    """Train the recipe's codec for ``minutes`` of wall time (``clock="cpu"``: of the training steps' CPU
    time, so that arms of an A/B on a shared machine get equal compute), or ``max_steps``; resume from the
    state beside ``out_path`` when there is one (unless ``fresh``). Writes ``out_path`` (safetensors, weight
    norm folded) and ``out_path`` with suffix .json (recipe, seed, steps, wall time, CPU time, losses,
    held-out quality)."""
    recipe = recipe or CodecRecipe()
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out_path = Path(out_path)
    json_path = out_path.with_suffix(".json")
    cfg = codec_config(recipe.preset)
    # multi-rate: a structure field, recorded in the weights' metadata too (load_codec reads it there)
    if recipe.multi_rate_strides:
        cfg.quantizer["multi_rate_strides"] = list(recipe.multi_rate_strides)
    codec = MimiCodec(cfg)
    warm_start: dict[str, Any] | None = None
    if init_from is not None:
        init_from = Path(init_from)
        fresh_parts = warm_start_into(codec, init_from)
        sidecar = init_from.with_suffix(".json")
        prior = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        warm_start = {"checkpoint": init_from.name, "sha256": file_sha256(init_from),
                      "prior_steps": prior.get("steps"), "prior_git_commit": prior.get("git_commit"),
                      "fresh_modules": fresh_parts}  # fmt: skip
    else:
        for vq in list(codec.quantizer.rvq_first.vq.layers) + list(codec.quantizer.rvq_rest.vq.layers):
            vq._codebook._initialized.fill_(0.0)  # k-means init on first use, as moshi
    audio = audio or TrainingAudio(recipe, cfg.sample_rate, log=log)
    init_scales = None
    if recipe.init == "unit-variance" and init_from is None:
        init_batch = audio.batch(np.random.default_rng(seed + 1), recipe.segment_frames * cfg.frame_size)
        init_scales = unit_variance_init(codec, init_batch)
    if recipe.weight_norm:
        add_weight_norm(codec)
    for rvq in (codec.quantizer.rvq_first, codec.quantizer.rvq_rest):
        rvq.commitment = recipe.commitment
    if recipe.train_parts not in ("all", "decoder"):
        raise ValueError(f"train_parts must be 'all' or 'decoder', got {recipe.train_parts!r}")
    if recipe.train_parts == "decoder" and init_from is None:
        raise ValueError("a decoder-only recipe trains on a codec's codes: pass --init-from")
    codec.to(device).train()
    frozen = freeze_encoder_side(codec) if recipe.train_parts == "decoder" else []
    mel_loss = MultiScaleMelLoss(cfg.sample_rate, recipe.mel_scales, recipe.mel).to(device)
    stft_loss = MultiResolutionSTFTLoss().to(device) if recipe.stft_weight else None
    # the losses see the samples a stream has complete: an iSTFT decoder's last n_fft - hop are partial
    keep = recipe.segment_frames * cfg.frame_size - codec.decode_delay
    needs_parts = recipe.options or recipe.adv_weight or recipe.feat_weight
    parts = OptionParts(recipe, codec, threads, device) if needs_parts else None
    trained = [p for p in codec.parameters() if p.requires_grad] + (
        parts.parameters() if parts is not None else []
    )
    opt = torch.optim.AdamW(trained, lr=recipe.lr, betas=recipe.betas, weight_decay=0.0)
    length = recipe.segment_frames * cfg.frame_size
    max_q = codec.max_codebooks
    step, elapsed, progress, cpu_s = 0, 0.0, [], 0.0
    st_path = _state_path(out_path)
    resumed_without_state: dict[str, Any] | None = None
    if st_path.is_file() and not fresh:
        step, elapsed, progress, cpu_s = _load_state(out_path, codec, opt, rng, recipe, parts)
        log(f"resumed from {st_path} at step {step} ({elapsed:.0f} s done)")
    elif not fresh and (unfinished := _unfinished_run(out_path, recipe)) is not None:
        # a machine without the state (a fresh clone): the run's committed weights at its last checkpoint,
        # a fresh optimizer and a reseeded sampler; the schedule goes on where it was
        if recipe.weight_norm:
            raise ValueError(f"{out_path}: no resume state; a weight-norm recipe restarts with --init-from")
        codec.load_state_dict(load_file(str(out_path)), strict=True)
        step, elapsed = int(unfinished["steps"]), float(unfinished["wall_time_s"])
        cpu_s, progress = float(unfinished.get("train_cpu_s", 0.0)), list(unfinished.get("progress", []))
        rng = np.random.default_rng([seed, step])
        torch.manual_seed(seed + step)
        resumed_without_state = {"weights": out_path.name, "sha256": file_sha256(out_path), "at_step": step,
                                 "optimizer": "fresh (its moments were not saved with the weights)",
                                 "sampler": f"numpy default_rng([seed, {step}])"}  # fmt: skip
        log(f"no resume state beside {out_path}: its weights go on from step {step} with a fresh optimizer")
    budget = minutes * 60.0
    t_start = time.time() - elapsed
    commit_at_start = git_commit()  # the code this process trains with (see training/lm.py)
    last_ckpt = last_eval = time.time()
    recent: list[tuple[float, float, float]] = []
    recent_options: dict[str, list[float]] = {}
    eval_sets = heldout_sets(cfg.sample_rate, per_set=4) if evaluate else []
    # a fixed batch of training audio: its codes' digest, at the start and in the sidecar, shows the
    # frozen tokeniser unchanged
    probe_audio = list(audio.batch(np.random.default_rng(seed + 2), length)[:, 0].numpy()) if frozen else []
    codes_at_start = codes_digest(codec, probe_audio) if frozen else None

    def write_outputs(final: bool, extra: dict[str, Any]) -> None:
        plain = plain_copy(codec).to("cpu")
        meta = {"preset": recipe.preset, "steps": str(step)}
        if recipe.multi_rate_strides:
            meta["multi_rate_strides"] = json.dumps(list(recipe.multi_rate_strides))
        if cfg.decoder is not None:  # load_codec builds the right decoder from the file alone
            meta["decoder"] = json.dumps(cfg.decoder)
        write_weights(out_path, plain.state_dict(), meta)
        tail = np.array(recent[-500:]) if recent else np.zeros((1, 3))
        info = {
            "produced_by": "vemi_eval.training.codec.train_codec",
            "trained_with": list(recipe.options),
            "trained": True,
            "recipe": {**asdict(recipe), "digest": recipe.digest(), "config": cfg.to_dict()},
            "data": audio.summary,
            "warm_start": warm_start,
            "frozen": frozen,
            "resumed_without_state": resumed_without_state,
            **(
                {"codes_digest_at_start": codes_at_start, "codes_digest": codes_digest(codec, probe_audio)}
                if frozen
                else {}
            ),
            **(parts.summary() if parts is not None else {}),
            "init_scales": init_scales,
            "seed": seed,
            "threads": threads,
            "device": device,
            "minutes_budget": minutes,
            "steps": step,
            "samples_seen_hours": round(step * recipe.batch_size * length / cfg.sample_rate / 3600, 2),
            "wall_time_s": round(time.time() - t_start, 1),
            # CPU seconds of the training steps (evaluations and checkpoints not counted), over resumes
            "train_cpu_s": round(cpu_s, 1),
            "clock": clock,
            "train_time_s": round(train_time_s, 1),
            "train_s_per_step": round(train_time_s / max(step - first_step, 1), 3),
            "final": final,
            "final_losses_mean_last_500": {
                "mel": float(tail[:, 0].mean()),
                "wave_l1": float(tail[:, 1].mean()),
                "commit": float(tail[:, 2].mean()),
                **{k: float(np.mean(v[-500:])) for k, v in recent_options.items()},
            },  # fmt: skip
            "progress": progress,
            "git_commit": git_commit(),
            "git_commit_at_start": commit_at_start,
            "torch": torch.__version__,
            "platform": platform.platform(),
            **extra,
        }
        write_sidecar(json_path, info)

    def done() -> bool:  # max_steps: equal steps per arm; the wall-time budget stays an upper bound
        if stop is not None and stop():  # a signal: save and stop (training/interrupt.py)
            return True
        spent = cpu_s if clock == "cpu" else time.time() - t_start
        return (max_steps is not None and step >= max_steps) or spent >= budget

    if eval_sets and not progress:  # the curve's first point: where the arm starts
        q = evaluate_codec(codec, eval_sets, (8, max_q))
        progress.append({"step": step, "t_s": 0, "train_cpu_s": round(cpu_s), "heldout_subset": q})
        last_eval = time.time()
    first_step, train_time_s, t_loop = step, 0.0, time.time()
    while not done():
        c0 = time.process_time()
        spent = cpu_s if clock == "cpu" else time.time() - t_start
        frac = spent / budget if max_steps is None else step / max_steps
        for group in opt.param_groups:
            group["lr"] = _lr_at(recipe.lr, step, frac, recipe.warmup_steps)
        if frozen:  # evaluate_codec's train() switched the frozen side back to train mode
            freeze_encoder_side(codec)
        x = audio.batch(rng, length).to(device)
        n_q = 8 if rng.random() < 0.5 else int(rng.integers(1, max_q + 1))
        n_q = min(n_q, max_q)
        bypass = torch.from_numpy(rng.random(recipe.batch_size) < recipe.bypass_rate).to(device)
        y, _, commit = codec(x, n_q, bypass)
        y, x = y[..., :keep], x[..., :keep]
        l_mel = mel_loss(y, x)
        l_wave = F.l1_loss(y, x)
        loss = recipe.mel_weight * l_mel + recipe.wave_weight * l_wave + recipe.commit_weight * commit
        if recipe.level_weight:
            l_level = frame_level_loss(y, x)
            loss = loss + recipe.level_weight * l_level
            recent_options.setdefault("level", []).append(l_level.item())
        if stft_loss is not None:
            l_stft = stft_loss(y, x)
            loss = loss + recipe.stft_weight * l_stft
            recent_options.setdefault("stft", []).append(l_stft.item())
        if parts is not None:
            for term, value in parts.losses(x, y).items():
                loss = loss + parts.weights()[term] * value
                recent_options.setdefault(term, []).append(value.item())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"codec training diverged at step {step} (loss {float(loss)})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, recipe.grad_clip)
        opt.step()
        recent.append((l_mel.item(), l_wave.item(), commit.item()))
        step += 1
        cpu_s += time.process_time() - c0
        train_time_s = time.time() - t_loop  # this process's steps (a resume counts its own)
        if step % log_every == 0:
            r = np.array(recent[-log_every:])
            extra_terms = "".join(f" {k}={np.mean(v[-log_every:]):.4f}" for k, v in recent_options.items())
            log(
                f"step {step} t={time.time() - t_start:.0f}s lr={opt.param_groups[0]['lr']:.2e} "
                f"mel={r[:, 0].mean():.4f} wave={r[:, 1].mean():.5f} commit={r[:, 2].mean():.4f}{extra_terms}"
            )
        if eval_sets and time.time() - last_eval > eval_every_s:
            q = evaluate_codec(codec, eval_sets, (8, max_q))
            progress.append({"step": step, "t_s": round(time.time() - t_start), "train_cpu_s": round(cpu_s),
                             "heldout_subset": q})  # fmt: skip
            log(f"step {step} held-out subset: " + json.dumps({k: v["8"] for k, v in q.items()})[:400])
            last_eval = time.time()
        if time.time() - last_ckpt > checkpoint_every_s:
            _save_state(
                out_path, codec, opt, step, time.time() - t_start, rng, progress, recipe, parts, cpu_s
            )
            write_outputs(False, {})
            last_ckpt = time.time()
    if parts is not None:
        parts.remove()
    codec.eval()
    _save_state(out_path, codec, opt, step, time.time() - t_start, rng, progress, recipe, parts, cpu_s)
    end_of_loop(stop, _state_path(out_path), step)  # a signal's stop (training/interrupt.py): raises
    extra: dict[str, Any] = {}
    write_outputs(False, extra)
    if evaluate:
        t_eval = time.time()
        extra["heldout_quality"] = evaluate_codec(plain_copy(codec).to("cpu"), heldout_sets(cfg.sample_rate))
        extra["heldout_quality_note"] = (
            "offline round trip, mean over held-out voices never used in training, per engine: "
            "espeak_eval_corpus = the codec suite's data; *_heldout_voices = codec_corpus(split='heldout')"
        )
        brief = {
            k: {n: [round(v[m], 3) for m in ("pesq_wb", "stoi", "level_db")] for n, v in q.items()}
            for k, q in extra["heldout_quality"].items()
        }
        log(f"held-out quality ({time.time() - t_eval:.0f}s): {json.dumps(brief)}")
    write_outputs(True, extra)
    return json.loads(json_path.read_text())

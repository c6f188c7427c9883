"""Training recipe of the "tiny" codec preset, on CPU (or a GPU where one is given).

Recipe 2 (the diagnosis behind it is in README "What the runs found"; the bundled weights were made with
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
from torch.nn import functional as F
from torch.nn.utils import parametrize

from reference_model.checkpoint import load_into
from reference_model.codec import MimiCodec, codec_config

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
    return {
        "v2": CodecRecipe(),
        "v1-continue": CodecRecipe(
            mel="lin+log",
            mel_scales=SIX_MEL_SCALES,
            commitment="absolute",
            commit_weight=1.0,
            wave_weight=0.1,
            lr=5e-4,
            warmup_steps=100,
            init="default",
        ),  # fmt: skip
    }


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


def evaluate_codec(codec: MimiCodec, sets: list[Heldout], codebooks=EVAL_CODEBOOKS) -> dict[str, Any]:
    """PESQ-WB, STOI (16 kHz) and decoded level (dB re input) of offline encode/decode, per held-out set
    and number of codebooks: mean over utterances, and per speaker."""
    from pesq import pesq
    from pystoi import stoi
    from scipy.signal import resample_poly

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
                out = out.numpy()
                g = math.gcd(16000, codec.sample_rate)
                r16 = resample_poly(ref, 16000 // g, codec.sample_rate // g)
                o16 = resample_poly(out, 16000 // g, codec.sample_rate // g)
                rows.append((spk, pesq(16000, r16, o16, "wb"), stoi(r16, o16, 16000), _level_db(ref, out)))
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
    out_path: Path, codec, opt, step: int, elapsed: float, rng, progress, recipe, parts=None
) -> None:
    """Everything a resume needs (vemi_eval/training/state.py: one safetensors file, never pickle)."""
    meta = {
        "recipe_digest": recipe.digest(),
        "step": step,
        "elapsed_s": elapsed,
        "numpy_rng": rng.bit_generator.state,
        "progress": progress,
    }
    extra = {"rng.torch": torch.get_rng_state(), **(parts.state_tensors() if parts is not None else {})}
    save_training_state(_state_path(out_path), codec, opt, meta, extra)


def _load_state(out_path: Path, codec, opt, rng, recipe, parts=None) -> tuple[int, float, list]:
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
    return int(meta["step"]), float(meta["elapsed_s"]), list(meta.get("progress", []))


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
        self.teacher = self.head = None
        if recipe.semantic_weight:
            from .semantic import SemanticHead, WhisperTeacher

            self.teacher = WhisperTeacher(codec.sample_rate, codec.frame_size, threads=threads)
            dim = int(codec.config.quantizer.get("output_dimension") or codec.config.quantizer["dimension"])
            self.head = SemanticHead(dim, self.teacher.info.dim).to(device)

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.head.parameters()) if self.head is not None else []

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"semantic_head.{k}": v for k, v in self.head.state_dict().items()} if self.head else {}

    def load_state_tensors(self, extra: dict[str, torch.Tensor]) -> None:
        if self.head is not None:
            self.head.load_state_dict({k[len("semantic_head.") :]: v for k, v in extra.items()
                                       if k.startswith("semantic_head.")})  # fmt: skip

    def summary(self) -> dict[str, Any]:
        if self.teacher is None:
            return {}
        return {"semantic_teacher": asdict(self.teacher.info)}

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The options' loss terms on the last pass over ``x`` (weighted by ``weights``), each named;
        re-anchoring (ERVQ) happens here too, after the pass's EMA update."""
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
        return terms

    def weights(self) -> dict[str, float]:
        r = self.recipe
        return {
            "balance": r.balance_weight,
            "decorrelation": r.decorrelation_weight,
            "semantic": r.semantic_weight,
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
    stop: StopRequest | None = None,
) -> dict[str, Any]:
    """Train the recipe's codec for ``minutes`` of wall time (or ``max_steps``); resume from the state
    beside ``out_path`` when there is one (unless ``fresh``). Writes ``out_path`` (safetensors, weight norm
    folded) and ``out_path`` with suffix .json (recipe, seed, steps, wall time, losses, held-out quality)."""
    recipe = recipe or CodecRecipe()
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
        load_into(codec, init_from)
        sidecar = init_from.with_suffix(".json")
        prior = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        warm_start = {"checkpoint": init_from.name, "prior_steps": prior.get("steps"),
                      "prior_git_commit": prior.get("git_commit")}  # fmt: skip
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
    codec.to(device).train()
    mel_loss = MultiScaleMelLoss(cfg.sample_rate, recipe.mel_scales, recipe.mel).to(device)
    parts = OptionParts(recipe, codec, threads, device) if recipe.options else None
    trained = list(codec.parameters()) + (parts.parameters() if parts is not None else [])
    opt = torch.optim.AdamW(trained, lr=recipe.lr, betas=recipe.betas, weight_decay=0.0)
    length = recipe.segment_frames * cfg.frame_size
    max_q = codec.max_codebooks
    step, elapsed, progress = 0, 0.0, []
    st_path = _state_path(out_path)
    if st_path.is_file() and not fresh:
        step, elapsed, progress = _load_state(out_path, codec, opt, rng, recipe, parts)
        log(f"resumed from {st_path} at step {step} ({elapsed:.0f} s done)")
    budget = minutes * 60.0
    t_start = time.time() - elapsed
    commit_at_start = git_commit()  # the code this process trains with (see training/lm.py)
    last_ckpt = last_eval = time.time()
    recent: list[tuple[float, float, float]] = []
    recent_options: dict[str, list[float]] = {}
    eval_sets = heldout_sets(cfg.sample_rate, per_set=4) if evaluate else []

    def write_outputs(final: bool, extra: dict[str, Any]) -> None:
        plain = plain_copy(codec).to("cpu")
        meta = {"preset": recipe.preset, "steps": str(step)}
        if recipe.multi_rate_strides:
            meta["multi_rate_strides"] = json.dumps(list(recipe.multi_rate_strides))
        write_weights(out_path, plain.state_dict(), meta)
        tail = np.array(recent[-500:]) if recent else np.zeros((1, 3))
        info = {
            "produced_by": "vemi_eval.training.codec.train_codec",
            "trained_with": list(recipe.options),
            "trained": True,
            "recipe": {**asdict(recipe), "digest": recipe.digest(), "config": cfg.to_dict()},
            "data": audio.summary,
            "warm_start": warm_start,
            **(parts.summary() if parts is not None else {}),
            "init_scales": init_scales,
            "seed": seed,
            "threads": threads,
            "device": device,
            "minutes_budget": minutes,
            "steps": step,
            "samples_seen_hours": round(step * recipe.batch_size * length / cfg.sample_rate / 3600, 2),
            "wall_time_s": round(time.time() - t_start, 1),
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
        return (max_steps is not None and step >= max_steps) or time.time() - t_start >= budget

    first_step, train_time_s, t_loop = step, 0.0, time.time()
    while not done():
        frac = (time.time() - t_start) / budget if max_steps is None else step / max_steps
        for group in opt.param_groups:
            group["lr"] = _lr_at(recipe.lr, step, frac, recipe.warmup_steps)
        x = audio.batch(rng, length).to(device)
        n_q = 8 if rng.random() < 0.5 else int(rng.integers(1, max_q + 1))
        n_q = min(n_q, max_q)
        bypass = torch.from_numpy(rng.random(recipe.batch_size) < recipe.bypass_rate).to(device)
        y, _, commit = codec(x, n_q, bypass)
        l_mel = mel_loss(y, x)
        l_wave = F.l1_loss(y, x)
        loss = recipe.mel_weight * l_mel + recipe.wave_weight * l_wave + recipe.commit_weight * commit
        if parts is not None:
            for term, value in parts.losses(x).items():
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
            progress.append({"step": step, "t_s": round(time.time() - t_start), "heldout_subset": q})
            log(f"step {step} held-out subset: " + json.dumps({k: v["8"] for k, v in q.items()})[:400])
            last_eval = time.time()
        if time.time() - last_ckpt > checkpoint_every_s:
            _save_state(out_path, codec, opt, step, time.time() - t_start, rng, progress, recipe, parts)
            write_outputs(False, {})
            last_ckpt = time.time()
    if parts is not None:
        parts.remove()
    codec.eval()
    _save_state(out_path, codec, opt, step, time.time() - t_start, rng, progress, recipe, parts)
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

"""The codec trainer's recipes: what a run learns (hashed: a resume refuses another digest), the recipe
options' settings, and the named recipes ``vemi-eval train codec --recipe NAME`` starts from.

Every named recipe's digest is pinned in tests/test_recipe_digests.py: a training resumes only under
the digest it started with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

MEL_SCALES = ((256, 40), (512, 64), (1024, 80), (2048, 128))  # recipe 1's (n_fft, n_mels), hop n_fft / 4
DAC_MEL_SCALES = ((32, 5), (64, 10), (128, 20), (256, 40), (512, 80), (1024, 160), (2048, 320))


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
    phase_weight: float = 0.0  # anti-wrapped phase derivatives at the iSTFT grid (PhaseDerivativeLoss)
    # The share of crops from the model's own voice reading other sentences (data/model_voice.py): the
    # voice the decoder renders every answer in, which the codec corpus holds out.
    model_voice_share: float = 0.0

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
    "phase_weight": 0.0,
    "model_voice_share": 0.0,
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
    istft_full = replace(
        v1_continue, **long_crops, preset="tiny-istft", lr=3e-4, level_weight=1.0, stft_weight=1.0
    )
    istft_decoder = replace(istft_full, train_parts="decoder", commit_weight=0.0, bypass_rate=0.0, lr=2e-4)
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
        "istft-full": istft_full,
        # The same with the causal STFT encoder front-end (reference_model/codec/stft_encoder.py) in place of
        # SEANet's: warm from a tiny-istft codec, every part but the new encoder carries over.
        "stft-full": replace(istft_full, preset="tiny-stft"),
        # istft-full with v1-decoder-gan's MS-STFT discriminator and feature matching (DAC's weights
        # relative to its mel loss), at v1-decoder-gan's learning rates; warm from an istft-full codec.
        # Why: its 8-codebook output recombined with the original's phase gains 0.05-0.07 STOI
        # (scripts/codec_phase_oracle.py -> reports/training/codec-phase-oracle-istft-full.json), and no
        # loss of istft-full but the 0.1-weighted waveform L1 sees the phase; Vocos learns its phase so.
        "istft-full-gan": replace(istft_full, lr=2e-4, adv_weight=1 / 15, feat_weight=2 / 15, disc_lr=2e-4),
        # The decoder alone on an istft-full codec's frozen tokeniser (its codes stay, so the LM that reads
        # them keeps pairing: `same tokeniser`), with and without istft-full-gan's discriminator: the phase
        # A/B at equal CPU time (same learning rate; only the adversarial terms differ). Why decoder-only:
        # through the unquantized latent the codec scores about what 8 codebooks do
        # (reports/training/codec-diagnosis-istft-full.json), so the codes are not the limit.
        "istft-decoder": istft_decoder,
        "istft-decoder-gan": replace(istft_decoder, adv_weight=1 / 15, feat_weight=2 / 15, disc_lr=2e-4),
        # The decoder alone with a loss on its phase and no discriminator: the GAN arm ran at a tenth of the
        # step rate and moved nothing in 45 CPU-min (reports/training/codec-istft-decoder-gan-45cpumin.json),
        # while the phase oracle says the decoded phase costs 0.05-0.07 STOI. APNet's phase-derivative
        # losses (PhaseDerivativeLoss) cost one STFT of output and input per step.
        "istft-decoder-phase": replace(istft_decoder, phase_weight=1.0),
        # The decoder alone with half of its crops in the model's own voice (festival's ked_diphone reading
        # other sentences than the codec corpus's, no answer word among them): the tiny model says every
        # answer in it, the codec corpus holds it out, and the corpus's own answers through the codec read
        # at ASR WER 1.58 (0.151 as synthesised; whole windows). Codes frozen: the LM keeps pairing.
        "istft-decoder-voice": replace(istft_decoder, model_voice_share=0.5),
    }  # fmt: skip

"""Training recipe of the "tiny" codec preset, on CPU, on the espeak-ng corpus's training split.

Losses: multi-scale mel (L1 on linear and log mel) + L1 on the waveform + RVQ commitment. Codebooks learn by
EMA with k-means initialisation and dead-code re-initialisation (as moshi's Mimi). Quantizer dropout: each
batch uses 8 codebooks half of the time, otherwise a uniform number in [1, max], so every bitrate decodes.
As in Mimi, a share of the items bypasses quantization so the decoder also learns from the clean latent.
No adversarial loss (not enough CPU time for it to pay off).

The learning-rate schedule follows the fraction of the wall-time budget spent, so a run of ``minutes``
ends annealed whatever the machine's speed; the number of steps done is recorded in the JSON.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from reference_model.checkpoint import load_into, save
from reference_model.codec import MimiCodec, codec_config

MEL_SCALES = ((256, 40), (512, 64), (1024, 80), (2048, 128))  # (n_fft, n_mels); hop = n_fft / 4
WAVE_WEIGHT = 10.0
COMMIT_WEIGHT = 1.0
BYPASS_RATE = 0.3
EVAL_CODEBOOKS = (4, 8, 16)


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
    def __init__(self, sample_rate: int, scales=MEL_SCALES) -> None:
        super().__init__()
        self.scales = scales
        for n_fft, n_mels in scales:
            self.register_buffer(f"fb_{n_fft}", _mel_filterbank(sample_rate, n_fft, n_mels))
            self.register_buffer(f"win_{n_fft}", torch.hann_window(n_fft))

    def mel(self, x: torch.Tensor, n_fft: int) -> torch.Tensor:
        spec = torch.stft(
            x,
            n_fft,
            hop_length=n_fft // 4,
            window=getattr(self, f"win_{n_fft}"),
            center=True,
            return_complex=True,
        ).abs()
        return torch.matmul(getattr(self, f"fb_{n_fft}"), spec)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y, x = y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1])
        total = y.new_zeros(())
        for n_fft, _ in self.scales:
            my, mx = self.mel(y, n_fft), self.mel(x, n_fft)
            total = total + F.l1_loss(my, mx) + F.l1_loss(torch.log(my + 1e-5), torch.log(mx + 1e-5))
        return total / len(self.scales)


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.check_output(["git", "-C", str(root), "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _training_audio(sample_rate: int) -> tuple[list[np.ndarray], str]:
    from vemi_eval.data.corpus import corpus_sha256, espeak_corpus

    utts = espeak_corpus(split="train", sample_rate=sample_rate)
    return [u.audio.astype(np.float32) for u in utts], corpus_sha256(utts)


def _sample_batch(audio: list[np.ndarray], rng: np.random.Generator, batch: int, length: int) -> torch.Tensor:
    out = np.zeros((batch, 1, length), dtype=np.float32)
    for i in range(batch):
        a = audio[rng.integers(len(audio))]
        if len(a) <= length:
            start = rng.integers(0, length - len(a) + 1)
            out[i, 0, start : start + len(a)] = a
        else:
            start = rng.integers(0, len(a) - length + 1)
            out[i, 0] = a[start : start + length]
        out[i] *= 10 ** (rng.uniform(-3.0, 3.0) / 20)  # small gain jitter
    return torch.from_numpy(out)


def _lr_at(base: float, step: int, frac: float, warmup: int) -> float:
    warm = min(1.0, (step + 1) / warmup)
    return base * warm * max(0.05, 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def evaluate_codec(codec: MimiCodec, utterances, codebooks=EVAL_CODEBOOKS) -> dict[str, dict[str, float]]:
    """PESQ-WB and STOI (16 kHz) of offline encode/decode per number of codebooks, mean over utterances."""
    from pesq import pesq
    from pystoi import stoi
    from scipy.signal import resample_poly

    results: dict[str, dict[str, float]] = {}
    was_training = codec.training
    codec.eval()
    keep = codec.num_codebooks
    for n in codebooks:
        codec.set_num_codebooks(n)
        pesqs, stois = [], []
        for u in utterances:
            ref = u.audio.astype(np.float32)
            with torch.no_grad():
                out = codec.decode(codec.encode(torch.from_numpy(ref).view(1, 1, -1)))[
                    0, 0, : len(ref)
                ].numpy()
            g = math.gcd(16000, u.sample_rate)
            r16 = resample_poly(ref, 16000 // g, u.sample_rate // g)
            o16 = resample_poly(out, 16000 // g, u.sample_rate // g)
            pesqs.append(pesq(16000, r16, o16, "wb"))
            stois.append(stoi(r16, o16, 16000, extended=False))
        results[str(n)] = {"pesq_wb": float(np.mean(pesqs)), "stoi": float(np.mean(stois)), "n": len(pesqs)}
    codec.set_num_codebooks(keep)
    codec.train(was_training)
    return results


def train_codec(
    out_path: str | os.PathLike,
    *,
    minutes: float,
    seed: int = 0,
    threads: int = 1,
    preset: str = "tiny",
    batch_size: int = 8,
    segment_frames: int = 12,
    lr: float = 1e-3,
    warmup_steps: int = 50,
    checkpoint_every_s: float = 300.0,
    log_every: int = 25,
    log=print,
    evaluate: bool = True,
    init_from: str | os.PathLike | None = None,
    wave_weight: float = WAVE_WEIGHT,
    mel_scales: tuple[tuple[int, int], ...] = MEL_SCALES,
    bypass_rate: float = BYPASS_RATE,
) -> dict[str, Any]:
    """Train the ``preset`` codec for ``minutes`` of wall time; write ``out_path`` (safetensors) and
    ``out_path`` with suffix .json (recipe, seed, steps, wall time, final losses, held-out quality).

    ``init_from``: a checkpoint to continue from (warm start: weights and trained codebooks are kept, the
    learning-rate schedule restarts with its warmup); its JSON sidecar, when present, is recorded."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out_path = Path(out_path)
    json_path = out_path.with_suffix(".json")
    cfg = codec_config(preset)
    codec = MimiCodec(cfg)
    warm_start: dict[str, Any] | None = None
    if init_from is not None:
        init_from = Path(init_from)
        load_into(codec, init_from)
        sidecar = init_from.with_suffix(".json")
        prior = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        warm_start = {
            "checkpoint": init_from.name,
            "prior_steps": prior.get("steps"),
            "prior_wall_time_s": prior.get("wall_time_s"),
            "prior_recipe": prior.get("recipe"),
            "prior_heldout_quality": prior.get("heldout_quality"),
            "prior_git_commit": prior.get("git_commit"),
        }
    else:
        for vq in list(codec.quantizer.rvq_first.vq.layers) + list(codec.quantizer.rvq_rest.vq.layers):
            vq._codebook._initialized.fill_(0.0)  # k-means init on first use, as moshi
    codec.train()
    audio, corpus_hash = _training_audio(cfg.sample_rate)
    mel_loss = MultiScaleMelLoss(cfg.sample_rate, mel_scales)
    opt = torch.optim.AdamW(codec.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
    length = segment_frames * cfg.frame_size
    max_q = codec.max_codebooks
    recipe = {
        "preset": preset,
        "config": cfg.to_dict(),
        "data": {"corpus": "espeak_corpus(split='train')", "sha256": corpus_hash, "utterances": len(audio)},
        "batch_size": batch_size,
        "segment_samples": length,
        "optimizer": {"name": "AdamW", "lr": lr, "betas": [0.8, 0.99], "warmup_steps": warmup_steps},
        "schedule": "cosine over the fraction of the wall-time budget, floor 5%",
        "losses": {
            "mel_scales": [list(s) for s in mel_scales],
            "wave_l1_weight": wave_weight,
            "commit_weight": COMMIT_WEIGHT,
        },
        "quantizer_dropout": "n_q=8 with p=0.5, else uniform in [1, max]",
        "bypass_rate": bypass_rate,
        "warm_start": warm_start,
        "codebooks": "EMA decay 0.99, k-means init, dead codes (<10% of uniform usage) re-initialised",
        "grad_clip": 1.0,
    }
    budget = minutes * 60.0
    t0 = time.time()
    last_ckpt = t0
    step = 0
    recent: list[tuple[float, float, float]] = []

    def write(final: bool, extra: dict[str, Any]) -> None:
        tmp = out_path.with_suffix(".tmp.safetensors")
        save(codec, tmp, metadata={"preset": preset, "steps": str(step)})
        os.replace(tmp, out_path)
        tail = np.array(recent[-200:]) if recent else np.zeros((1, 3))
        info = {
            "produced_by": "vemi_eval.training.codec.train_codec",
            "recipe": recipe,
            "seed": seed,
            "threads": threads,
            "minutes_budget": minutes,
            "steps": step,
            "wall_time_s": round(time.time() - t0, 1),
            "final": final,
            "final_losses_mean_last_200": {
                "mel": float(tail[:, 0].mean()),
                "wave_l1": float(tail[:, 1].mean()),
                "commit": float(tail[:, 2].mean()),
            },
            "git_commit": _git_commit(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            **extra,
        }
        json_path.write_text(json.dumps(info, indent=2) + "\n")

    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for group in opt.param_groups:
            group["lr"] = _lr_at(lr, step, frac, warmup_steps)
        x = _sample_batch(audio, rng, batch_size, length)
        n_q = 8 if rng.random() < 0.5 else int(rng.integers(1, max_q + 1))
        n_q = min(n_q, max_q)
        bypass = torch.from_numpy(rng.random(batch_size) < bypass_rate)
        y, _, commit = codec(x, n_q, bypass)
        l_mel = mel_loss(y, x)
        l_wave = F.l1_loss(y, x)
        loss = l_mel + wave_weight * l_wave + COMMIT_WEIGHT * commit
        if not torch.isfinite(loss):
            raise FloatingPointError(f"codec training diverged at step {step} (loss {float(loss)})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        opt.step()
        recent.append((l_mel.item(), l_wave.item(), commit.item()))
        step += 1
        if step % log_every == 0:
            r = np.array(recent[-log_every:])
            log(
                f"step {step} t={time.time() - t0:.0f}s lr={opt.param_groups[0]['lr']:.2e} "
                f"mel={r[:, 0].mean():.4f} wave={r[:, 1].mean():.5f} commit={r[:, 2].mean():.4f}"
            )
        if time.time() - last_ckpt > checkpoint_every_s:
            write(False, {})
            last_ckpt = time.time()
    codec.eval()
    extra: dict[str, Any] = {}
    write(False, extra)
    if evaluate:
        from vemi_eval.data.corpus import espeak_corpus

        held = espeak_corpus(split="heldout", sample_rate=cfg.sample_rate)
        t_eval = time.time()
        extra["heldout_quality"] = evaluate_codec(codec, held, EVAL_CODEBOOKS + (max_q,))
        extra["heldout_quality_note"] = (
            "mean over espeak_corpus(split='heldout'): unseen speakers and sentences"
        )
        log(f"held-out quality ({time.time() - t_eval:.0f}s): {json.dumps(extra['heldout_quality'])}")
    write(True, extra)
    return json.loads(json_path.read_text())

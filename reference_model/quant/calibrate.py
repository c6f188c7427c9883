"""Calibration: what every linear layer of a model sees while the model runs as it will be used.

:func:`collect_linear_inputs` hooks every ``nn.Linear`` (and 1x1 ``nn.Conv1d``, a linear over channels)
and accumulates, per layer, the statistics GPTQ and AWQ need: the Gram matrix ``sum x x^T`` (GPTQ's
Hessian, up to a factor), the mean absolute activation per input channel, and a seeded subsample of input
rows (AWQ's search set). The drivers run the model the way it streams:

* :func:`lm_calibration`: the LM streamed with :class:`reference_model.lm.Streamer` on user codes that the
  codec made from speech (espeak-ng when installed, else a seeded synthetic voiced signal), or seeded
  random codes when no codec is given.
* :func:`codec_calibration`: the codec encoding and decoding that speech.

The statistics come from the full-precision model in one pass (not layer by layer on already-quantized
inputs, as the GPTQ paper does): simpler, and each layer's calibration stays independent of the method.
Only what the method reads is kept (``needs``): GPTQ the Gram matrix, in fp32 on the layer's device (a
K x K float64 copy on the host per linear was ~51 GB for the 7B); AWQ the row subsample. What is cached
on disk is the quantized weights (:mod:`.models`), not these statistics.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

CALIBRATION_SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Could you tell me how long the train takes to reach the city centre?",
    "We measured the latency of every frame and wrote the numbers down.",
    "Please remember to water the plants while I am away next week.",
)
ESPEAK_VOICES = ("en-us", "en+m3", "en+f3", "en-gb")


NEEDS = frozenset({"gram", "samples"})  # what a method may read besides the mean |x| (always kept)


@dataclass
class LinearInputStats:
    """Running statistics of one layer's inputs (rows of length ``in_features``), on ``device`` (the
    layer's); ``needs`` says which of the Gram matrix (GPTQ) and the row subsample (AWQ) to keep."""

    in_features: int
    max_samples: int
    generator: torch.Generator
    device: torch.device | str = "cpu"
    needs: frozenset[str] = NEEDS
    gram: torch.Tensor | None = field(init=False)  # sum of x x^T, float32 [K, K], GPTQ only
    abs_sum: torch.Tensor = field(init=False)  # sum of |x|, float32 [K]
    count: int = 0
    samples: torch.Tensor | None = field(init=False)  # seeded subsample of rows [< 2 * max_samples, K]

    def __post_init__(self) -> None:
        k = self.in_features
        self.gram = torch.zeros(k, k, device=self.device) if "gram" in self.needs else None
        self.abs_sum = torch.zeros(k, device=self.device)
        self.samples = torch.zeros(0, k, device=self.device) if "samples" in self.needs else None
        self._pending: list[torch.Tensor] = []

    def add(self, rows: torch.Tensor) -> None:
        self._pending.append(rows.detach().reshape(-1, self.in_features).float().to(self.device))
        self.count += self._pending[-1].shape[0]
        if sum(r.shape[0] for r in self._pending) >= 256:  # batch the Gram update: one big matmul
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        rows = torch.cat(self._pending)
        self._pending = []
        if self.gram is not None:
            self.gram += rows.T @ rows
        self.abs_sum += rows.abs().sum(dim=0)
        if self.samples is not None:
            # Keep a seeded uniform subsample: gather up to twice the budget, then keep a random half.
            self.samples = torch.cat([self.samples, rows])
            if self.samples.shape[0] >= 2 * self.max_samples:
                keep = torch.randperm(self.samples.shape[0], generator=self.generator)[: self.max_samples]
                self.samples = self.samples[keep.sort().values.to(self.samples.device)]

    @property
    def hessian(self) -> torch.Tensor:
        """GPTQ's H = 2/n X^T X."""
        if self.gram is None:
            raise ValueError("these statistics were collected without the Gram matrix (needs={'gram'})")
        return self.gram * (2.0 / max(self.count, 1))

    @property
    def act_abs_mean(self) -> torch.Tensor:
        return (self.abs_sum / max(self.count, 1)).float()


def is_linear_like(module: nn.Module) -> bool:
    """An ``nn.Linear``, or an ``nn.Conv1d`` with kernel 1, stride 1, one group (a linear over channels)."""
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv1d)
        and module.kernel_size == (1,)
        and module.stride == (1,)
        and module.groups == 1
        and module.padding in ((0,), "valid")
    )


def collect_linear_inputs(
    model: nn.Module,
    run: Callable[[], None],
    *,
    include: Callable[[str, nn.Module], bool] = lambda name, module: True,
    max_samples: int = 512,
    seed: int = 0,
    needs: frozenset[str] = NEEDS,
) -> dict[str, LinearInputStats]:
    """Call ``run()`` (which drives ``model``) with a forward hook on every linear-like layer; return the
    statistics of each layer's inputs by module name, kept on each layer's device."""
    stats: dict[str, LinearInputStats] = {}
    handles = []
    for name, module in model.named_modules():
        if not (is_linear_like(module) and include(name, module)):
            continue
        k = module.in_features if isinstance(module, nn.Linear) else module.in_channels
        gen = torch.Generator().manual_seed(seed + len(stats))
        stats[name] = LinearInputStats(k, max_samples, gen, module.weight.device, frozenset(needs))
        conv = isinstance(module, nn.Conv1d)

        def hook(mod, args, _out, s=stats[name], conv=conv):
            x = args[0]
            s.add(x.transpose(1, 2) if conv else x)  # a conv's channels are dim 1

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
        for s in stats.values():
            s.flush()
    return {name: s for name, s in stats.items() if s.count > 0}


# --- calibration speech ----------------------------------------------------------------------------


def calibration_speech(
    sample_rate: int = 24000, seconds: float = 16.0, seed: int = 0
) -> tuple[np.ndarray, str]:
    """Mono float32 speech to calibrate on, and where it came from ("espeak-ng" or "synthetic")."""
    audio = _espeak_speech(sample_rate)
    source = "espeak-ng"
    if audio is None:
        audio, source = _synthetic_voiced(sample_rate, seconds, seed), "synthetic"
    n = int(seconds * sample_rate)
    reps = -(-n // len(audio))
    audio = np.tile(audio, reps)[:n]
    rng = np.random.default_rng(seed)
    audio = audio + 1e-4 * rng.standard_normal(len(audio))  # espeak leaves exact zeros: dither
    return audio.astype(np.float32), source


@lru_cache(maxsize=4)
def _espeak_speech(sample_rate: int) -> np.ndarray | None:
    """The calibration sentences, spoken once per process and rate (every weight flag and both MoD passes
    calibrate on them; espeak-ng is deterministic). Read-only: callers tile a copy."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    import soundfile
    from scipy.signal import resample_poly

    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (text, voice) in enumerate(zip(CALIBRATION_SENTENCES, ESPEAK_VOICES)):
            path = Path(tmp) / f"{i}.wav"
            done = subprocess.run([exe, "-v", voice, "-w", str(path), text], capture_output=True, timeout=60)
            if done.returncode != 0 or not path.is_file():
                return None
            audio, sr = soundfile.read(path, dtype="float32")
            g = np.gcd(sample_rate, sr)
            parts.append(resample_poly(audio, sample_rate // g, sr // g).astype(np.float32))
    audio = np.concatenate(parts)
    audio = 0.5 * audio / max(float(np.abs(audio).max()), 1e-6)
    audio.setflags(write=False)
    return audio


def _synthetic_voiced(sample_rate: int, seconds: float, seed: int) -> np.ndarray:
    """A voiced-speech-like signal: a gliding pitch with harmonics under slowly moving formants, in
    syllable-rate bursts. Used only when espeak-ng is missing."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t) + 10 * rng.standard_normal() * np.sin(2 * np.pi * 0.2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = (500 + 200 * np.sin(2 * np.pi * 1.3 * t), 1500 + 400 * np.sin(2 * np.pi * 0.9 * t))
    x = np.zeros_like(t)
    for h in range(1, 30):
        fh = h * f0
        gain = sum(np.exp(-(((fh - f) / 150) ** 2)) for f in formants) + 0.05
        x += gain * np.sin(h * phase) / h
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    x = x * envelope + 0.01 * rng.standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


# --- drivers -----------------------------------------------------------------------------------------


def _speech_batch(codec, batch: int, seconds: float, seed: int) -> tuple[torch.Tensor, str]:
    """[batch, 1, n] calibration speech in the codec's device and dtype, and its source."""
    audio, source = calibration_speech(codec.sample_rate, seconds * batch, seed)
    frames = int(seconds * codec.frame_rate)
    n = frames * codec.frame_size
    wav = torch.from_numpy(audio[: batch * n].copy()).view(batch, 1, n)
    p = next(codec.parameters())
    return wav.to(p.device, p.dtype), source


def random_user_codes(lm, batch: int, frames: int, seed: int) -> torch.Tensor:
    """Seeded random user codes [batch, n_user, frames] on the LM's device."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, lm.card, (batch, lm.n_q - lm.dep_q, frames), generator=g).to(lm.device)


def calibration_user_codes(lm, codec, batch: int, frames: int, seed: int) -> tuple[torch.Tensor, str]:
    """User codes [batch, n_user, frames] to calibrate on, and what they are: the codec's codes of
    calibration speech when a codec is given, else seeded random codes (a bare LM)."""
    if codec is None:
        return random_user_codes(lm, batch, frames, seed), "random user codes"
    n_user = lm.n_q - lm.dep_q
    audio, source = _speech_batch(codec, batch, frames / codec.frame_rate, seed)
    with torch.no_grad():
        codes = codec.encode(audio)
    if codes.shape[1] < n_user or codes.shape[2] < frames:
        raise ValueError(f"codec gave codes {list(codes.shape)}; the LM needs {n_user} codebooks")
    return codes[:, :n_user, :frames].to(lm.device), f"the codec's codes of {source} speech"


@torch.no_grad()
def stream_codes(lm, codes: torch.Tensor, seed: int) -> None:
    """Stream user codes [B, n_user, T] through a fresh streamer (baseline sampler, seeded), leaving the
    global random state as it was. The one calibration driver of the LM (weight flags and MoD routers)."""
    from reference_model.lm import Streamer

    with torch.random.fork_rng(devices=[lm.device] if lm.device.type == "cuda" else []):
        torch.manual_seed(seed)
        streamer = Streamer(lm, batch_size=codes.shape[0])
        for t in range(codes.shape[2]):
            streamer.step(codes[:, :, t : t + 1])


def lm_calibration(
    lm,
    codec=None,
    *,
    frames: int = 200,
    batch: int = 2,
    seed: int = 0,
    max_samples: int = 512,
    include: Callable[[str, nn.Module], bool] = lambda name, module: True,
    needs: frozenset[str] = NEEDS,
) -> dict[str, LinearInputStats]:
    """Stream ``lm`` for ``frames`` steps on ``batch`` streams of user codes (from the codec on speech when
    a codec is given, else seeded random codes); sampling seeded. Returns stats for the LM's linears."""
    codes, _ = calibration_user_codes(lm, codec, batch, frames, seed)
    return collect_linear_inputs(
        lm,
        lambda: stream_codes(lm, codes, seed),
        include=include,
        max_samples=max_samples,
        seed=seed,
        needs=needs,
    )


def codec_calibration(
    codec,
    *,
    seconds: float = 8.0,
    batch: int = 2,
    seed: int = 0,
    max_samples: int = 512,
    include: Callable[[str, nn.Module], bool] = lambda name, module: True,
    needs: frozenset[str] = NEEDS,
) -> dict[str, LinearInputStats]:
    """Encode then decode speech with ``codec`` (offline, which equals streaming); stats of its linears."""
    wav, _ = _speech_batch(codec, batch, seconds, seed)

    def run() -> None:
        codec.decode(codec.encode(wav))

    return collect_linear_inputs(codec, run, include=include, max_samples=max_samples, seed=seed, needs=needs)


# --- fingerprint -----------------------------------------------------------------------------------------


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every state-dict tensor: the checkpoint's
    content hash (whatever file it came from), read from the model as loaded."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_root() -> Path | None:
    """``$VEMI_CACHE/quant`` (default ``~/.cache/vemi-eval/quant``); None when ``VEMI_QUANT_CACHE=0``."""
    if os.environ.get("VEMI_QUANT_CACHE", "1") == "0":
        return None
    return Path(os.environ.get("VEMI_CACHE", Path.home() / ".cache" / "vemi-eval")) / "quant"


def cache_key(model: nn.Module, recipe: dict) -> str:
    key = json.dumps({"weights": model_fingerprint(model), **recipe}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:24]

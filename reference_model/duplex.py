"""The one narrow interface through which anything outside the model (the harness, outside checks) drives
a full-duplex conversation: user PCM in, text tokens and model PCM out, one 80 ms frame per step.

Each stage is a separate call so that a caller can time it (encode the user's frame, one LM step, decode
the model's frame). The model knows nothing of who calls it.

What the flags did and count is one typed object, :meth:`DuplexModel.report`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .report import FlagReport, ModelReport


@dataclass
class DuplexSpec:
    """Everything needed to build one model variant."""

    lm: str | dict = "tiny"  # preset name, path to a Moshi-format config JSON, or a dict
    codec: str | dict = "tiny"  # preset name ("tiny", "mimi"), path or dict
    lm_checkpoint: str | None = None
    codec_checkpoint: str | None = None  # None: the preset's bundled weights where it has some
    flags: str | Iterable[str] | None = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float32  # the LM's weights and activations
    # The codec's (Moshi runs Mimi in fp32 and only the LM in bf16: bf16 codebook distances flip codes).
    codec_dtype: torch.dtype = torch.float32
    batch_size: int = 1
    seed: int = 0
    temp: float = 0.8
    temp_text: float = 0.7
    top_k: int = 250
    top_k_text: int = 25
    extra: dict[str, Any] = field(default_factory=dict)


class DuplexModel:
    """LM + codec + their streaming state for ``batch_size`` concurrent conversations."""

    def __init__(self, lm, codec, streamer, codec_streamer, spec: DuplexSpec, flags: list) -> None:
        self.lm = lm
        self.codec = codec
        self.streamer = streamer
        self.codec_streamer = codec_streamer
        self.spec = spec
        self.flags = flags
        self.batch_size = spec.batch_size
        self.device = torch.device(spec.device)
        self.sample_rate: int = codec.sample_rate
        self.frame_size: int = codec.frame_size
        self.frame_rate: float = codec.frame_rate
        self.n_user_codebooks: int = lm.n_q - lm.dep_q
        self.dep_q: int = lm.dep_q
        self.max_delay: int = max(lm.delays)
        self.codec_dtype: torch.dtype = next(codec.parameters()).dtype
        # The codec's two streaming stages, replaceable by runtime transforms (compile, CUDA graphs) like
        # the streamer's ``temporal_step`` and ``depformer_sample``.
        self.codec_encode = codec_streamer.encode
        self.codec_decode = codec_streamer.decode
        # What each flag's ``apply`` returned, by flag name, in the order applied (filled by the build).
        self.flag_reports: dict[str, FlagReport] = {}
        self.pairing = None  # pairing.PairCheck: how the LM and codec files were found to match

    # --- the three timed stages -------------------------------------------------------------
    def encode_user(self, pcm: torch.Tensor) -> torch.Tensor:
        """[B, 1, frame_size] float PCM (any float dtype: cast to the codec's) -> user codes
        [B, n_user_codebooks, 1]."""
        codes = self.codec_encode(pcm.to(self.codec_dtype))
        if codes.shape[-1] != 1:  # a multi-rate codec emits codes once its window closes
            raise ValueError(
                f"the codec gave {codes.shape[-1]} frames of codes for one of audio (a multi-rate codec, "
                "code window > 1): the duplex loop feeds the LM one frame a step"
            )
        return codes[:, : self.n_user_codebooks]

    def lm_step(self, user_codes: torch.Tensor) -> torch.Tensor | None:
        """User codes [B, 8, 1] -> [B, 1 + dep_q, 1] (text + model audio), None during the first delays."""
        return self.streamer.step(user_codes)

    def decode_model(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, 1 + dep_q, 1] -> model PCM [B, 1, frame_size] in the codec's dtype.

        A conversation reset part-way is still inside its delays: its rows hold -2 ("not generated yet").
        Those rows are decoded as code 0 (so every row's codec state advances in lockstep) and come out
        as silence.
        """
        audio = tokens[:, 1:]
        pending = (audio == -2).any(dim=1).view(-1)  # [B]; -1 (a codebook not sent) is the codec's business
        if not bool(pending.any()):
            return self.codec_decode(audio)
        pcm = self.codec_decode(audio.masked_fill(audio == -2, 0))
        return pcm.masked_fill(pending.view(-1, 1, 1), 0.0)

    # --- convenience --------------------------------------------------------------------------
    def step(self, pcm: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One full-duplex frame. Returns (text tokens [B] or None, model PCM [B, 1, frame_size])."""
        tokens = self.lm_step(self.encode_user(pcm))
        if tokens is None:
            zeros = torch.zeros(pcm.shape[0], 1, self.frame_size, device=pcm.device, dtype=self.codec_dtype)
            return None, zeros
        return tokens[:, 0, 0], self.decode_model(tokens)

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Reset every conversation, or those where ``mask`` [B] is True."""
        self.streamer.reset(mask)
        self.codec_streamer.reset(mask)

    def sync(self) -> None:
        """Wait for queued device work (a no-op on CPU): call before reading a clock."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- what the flags did -------------------------------------------------------------------
    def report(self) -> ModelReport:
        """The flags as applied (canonical order), each flag's entry, and the kernels actually run."""
        from .quant.linear import quantized_kernel_of

        per_layer = {
            "temporal": [dict(a.kernel_calls) for a in self.lm.transformer.attentions()],
            "depth": [dict(a.kernel_calls) for a in self.lm.depformer.attentions()],
        }
        attention = {part: sum((Counter(k) for k in layers), Counter()) for part, layers in per_layer.items()}
        linear: Counter[str] = Counter()
        for module in self.lm.modules():
            kernel = quantized_kernel_of(module)
            if kernel is not None:
                linear[kernel] += 1
            elif isinstance(module, torch.nn.Linear):
                linear[f"torch.nn.Linear ({str(module.weight.dtype).removeprefix('torch.')})"] += 1
        return ModelReport(
            flags=[str(f) for f in self.flags],
            entries=dict(self.flag_reports),
            attention_kernels={k: dict(v) for k, v in attention.items()},
            attention_kernels_per_layer=per_layer,
            linear_kernels=dict(linear),
            dtype=str(self.lm.dtype).removeprefix("torch."),
            codec_dtype=str(self.codec_dtype).removeprefix("torch."),
        )

    def warm_up(self, steps: int) -> float:
        """Run ``steps`` frames of silence (compiling or capturing what is lazy), with a partial reset half
        way when the batch has several streams (the ragged path), then reset every stream and restore the
        RNG. Returns the wall seconds. A warmed-up model gives the same tokens as a fresh one."""
        cpu_rng = torch.random.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        pcm = torch.zeros(self.batch_size, 1, self.frame_size, device=self.device, dtype=self.codec_dtype)
        self.reset()
        self.sync()
        t0 = time.perf_counter()
        for i in range(steps):
            if i == steps // 2 and self.batch_size > 1:
                mask = torch.zeros(self.batch_size, dtype=torch.bool)
                mask[0] = True
                self.reset(mask)  # ragged positions: the masked attention path
            tokens = self.lm_step(self.encode_user(pcm))
            if tokens is not None:
                # rows of a just-reset stream are -2 (not generated yet): decode them as code 0
                self.decode_model(tokens.clamp_min(0))
        self.sync()
        elapsed = time.perf_counter() - t0
        self.reset()
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        return elapsed

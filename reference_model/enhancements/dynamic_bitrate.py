"""``dynamic-bitrate=MIN[-MAX]`` (seed doc 3.2): the codec sends MIN..MAX codebooks per 80 ms frame,
chosen from the frame's content, instead of a fixed number.

Policy (causal, per frame and per stream): silence (RMS below ``silence_dbfs``) gets MIN codebooks;
active but noise-like frames (high spectral flatness: breath, hiss, fricatives) get the middle of the
range; voiced, tonal frames get MAX, and so do the ``hangover`` frames after one (a VAD's hangover, so that
word endings keep their detail). MAX defaults to the codebooks in use.

What changes: ``codec.encode`` (the transmitted stream) marks the codebooks a frame does not send as -1,
and the quantizer's decode (offline ``codec.decode`` and ``CodecStreamer.decode``) treats -1 as "not
sent": that codebook contributes nothing, as when decoding with only the first n codebooks. The LM still
gets all its user codebooks (the streaming encoder is untouched). The bitrate actually sent is counted
by the flag's report (``BitrateReport.meter``, a :class:`BitrateMeter`: ``mean_kbps``, ``fixed_kbps``,
``last`` codebooks per frame).

The transform wraps the codec's offline ``encode`` and its quantizer's ``decode`` (the codec package has
no hook for a send policy, so these two callables are replaced on the instances).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..report import BitrateMeter, BitrateReport
from . import FlagError, FlagSpec, register

NOT_SENT = -1


@dataclass(frozen=True)
class CodebookRange:
    min_codebooks: int
    max_codebooks: int | None  # None: the codebooks the codec has in use


def _parse(value: str | None) -> CodebookRange:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", value or "")
    if m is None:
        raise ValueError("expected MIN or MIN-MAX codebooks per frame, e.g. 2 or 2-8")
    lo, hi = int(m.group(1)), None if m.group(2) is None else int(m.group(2))
    if lo < 1:
        raise ValueError(f"MIN must be >= 1, got {lo}")
    if hi is not None and hi < lo:
        raise ValueError(f"MAX ({hi}) is below MIN ({lo})")
    return CodebookRange(lo, hi)


register(
    FlagSpec(
        name="dynamic-bitrate",
        module=__name__.rsplit(".", 1)[1],
        stage="model",
        summary="codec sends MIN..MAX codebooks per frame by content (silence/noise fewer, speech all)",
        parse=_parse,
        default="2",
        order=70,
    )
)


class ContentPolicy:
    """Codebooks per frame from RMS level and spectral flatness (a small energy + tonality VAD)."""

    def __init__(
        self,
        min_codebooks: int,
        max_codebooks: int,
        *,
        frame_size: int,
        silence_dbfs: float = -50.0,
        noise_flatness: float = 0.3,
        hangover: int = 2,
    ) -> None:
        self.min_codebooks, self.max_codebooks = min_codebooks, max_codebooks
        self.frame_size = frame_size
        self.silence_dbfs = silence_dbfs
        self.noise_flatness = noise_flatness
        self.hangover = hangover

    def features(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav [B, 1, F * frame_size] -> (RMS dBFS [B, F], spectral flatness [B, F] in (0, 1])."""
        frames = wav.float().reshape(wav.shape[0], -1, self.frame_size)
        rms_db = 10 * torch.log10(frames.pow(2).mean(-1) + 1e-12)
        window = torch.hann_window(self.frame_size, periodic=False, device=wav.device)
        power = torch.fft.rfft(frames * window).abs().pow(2)[..., 1:] + 1e-12
        flatness = torch.exp(power.log().mean(-1)) / power.mean(-1)
        return rms_db, flatness

    def choose(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, 1, F * frame_size] -> codebooks to send per frame, LongTensor [B, F]."""
        rms_db, flatness = self.features(wav)
        active = rms_db > self.silence_dbfs
        voiced = active & (flatness < self.noise_flatness)
        keep = voiced.clone()
        for lag in range(1, self.hangover + 1):  # causal hangover: only past frames count
            keep[:, lag:] |= voiced[:, :-lag]
        middle = (self.min_codebooks + self.max_codebooks + 1) // 2
        n = torch.full_like(rms_db, self.min_codebooks, dtype=torch.long)
        n = torch.where(active, torch.full_like(n, middle), n)
        return torch.where(keep, torch.full_like(n, self.max_codebooks), n)


def decode_sent(quantizer, codes: torch.Tensor) -> torch.Tensor:
    """Split-RVQ decode where code -1 means "not sent" (contributes nothing). codes [B, K, T] -> [B, C, T].

    Equal to the quantizer's own decode when every code is sent; a frame without any acoustic code gets
    the semantic part only, as ``decode(codes[:, :1])`` would give.
    """
    sent = codes >= 0
    safe = codes.clamp_min(0)
    n_sem = quantizer.n_q_semantic
    if not bool(sent[:, :n_sem].all()):
        raise ValueError("the semantic codebook must be sent for every frame")

    def part(rvq, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        total = None
        for k, cb in enumerate(rvq.codebooks(c.shape[1])):
            q = cb.decode(c[:, k]) * s[:, k, :, None].to(cb.embedding.dtype)  # [B, T, D]
            total = q if total is None else total + q
        return rvq.output_proj(total.transpose(1, 2))

    out = part(quantizer.rvq_first, safe[:, :n_sem], sent[:, :n_sem])
    if codes.shape[1] > n_sem:
        rest = part(quantizer.rvq_rest, safe[:, n_sem:], sent[:, n_sem:])
        out = out + rest * sent[:, n_sem:].any(dim=1)[:, None, :].to(rest.dtype)
    return out


def apply(lm, codec, value: CodebookRange) -> BitrateReport:
    in_use = codec.num_codebooks
    lo, hi = value.min_codebooks, value.max_codebooks if value.max_codebooks is not None else in_use
    n_sem = codec.quantizer.n_q_semantic
    if lo < n_sem:
        raise FlagError(f"dynamic-bitrate: MIN ({lo}) must keep the {n_sem} semantic codebook(s)")
    if hi > in_use:
        raise FlagError(f"dynamic-bitrate: MAX ({hi}) exceeds the {in_use} codebooks the codec has in use")
    if lo > hi:
        raise FlagError(f"dynamic-bitrate: MIN ({lo}) exceeds MAX ({hi})")
    policy = ContentPolicy(lo, hi, frame_size=codec.frame_size)
    meter = BitrateMeter(codec.cardinality, codec.frame_rate, in_use, hi - lo + 1)
    full_encode = codec.encode
    quantizer = codec.quantizer

    def encode(wav: torch.Tensor) -> torch.Tensor:
        """[B, 1, T] -> sent codes [B, num_codebooks, F]; codebooks a frame does not send are -1."""
        codes = full_encode(wav)
        pad = codes.shape[-1] * codec.frame_size - wav.shape[-1]
        n = policy.choose(torch.nn.functional.pad(wav, (0, pad))).to(codes.device)
        n = n.clamp(max=codes.shape[1])  # the codec may have fewer codebooks in use than at apply time
        meter.add(n)
        k = torch.arange(codes.shape[1], device=codes.device)[None, :, None]
        return codes.masked_fill(k >= n[:, None, :], NOT_SENT)

    codec.encode = encode
    quantizer.decode = lambda codes: decode_sent(quantizer, codes)
    return BitrateReport(min_codebooks=lo, max_codebooks=hi, meter=meter)

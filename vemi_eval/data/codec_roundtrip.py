"""A codec's round trip of one utterance: its codes (offline, or streamed frame by frame when the input is
long), the waveform from the first n codebooks, and the bitrate those codebooks carry. The codec-side
measurement kinds (codec, wer, speaker, noise, first_audio, codebook_usage, semantic_content, dialogue)
share it; it knows nothing of suites or records.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def level_strides(codec, n: int) -> tuple[int, ...]:
    """Frames per code of the first n codebooks: a multi-rate codec's coarse levels send one code per
    window of frames (its codes repeat over the window); 1 for every level of a single-rate codec."""
    strides = tuple(getattr(getattr(codec, "quantizer", None), "level_strides", ()) or ())
    return (strides + (1,) * n)[:n]


def bitrate_kbps(codec, n: int) -> float:
    """Bits per second of the first n codebooks, each level counted at its own rate."""
    codes_per_frame = sum(1.0 / s for s in level_strides(codec, n))
    return round(codes_per_frame * math.log2(int(codec.cardinality)) * float(codec.frame_rate) / 1000, 4)


def sent_kbps(codec, codes: torch.Tensor) -> float:
    """Bitrate actually carried by ``codes``: codebooks marked -1 (not sent, dynamic bitrate) cost nothing;
    a multi-rate level's code is sent once per window of its stride."""
    weights = torch.tensor([1.0 / s for s in level_strides(codec, codes.shape[1])], device=codes.device)
    sent = float(((codes >= 0).float().sum(dim=(0, 2)) * weights).sum())
    seconds = codes.shape[-1] / float(codec.frame_rate)
    return sent * math.log2(int(codec.cardinality)) / seconds / 1000


# Inputs longer than this go through the codec frame by frame (its streaming state, which gives the codes
# of the offline pass): an offline pass holds every layer's activations for the whole input (about 4.8 GB
# for 600 s), a streamed one a frame's worth.
STREAM_ABOVE_S = 60.0


def streams(codec, n_samples: int) -> bool:
    """Stream this input? Only a plain streaming codec: a variant that replaces encode or decode on the
    instance (dynamic bitrate) runs offline, as its change lives in those methods."""
    plain = hasattr(codec, "new_encoder_state") and not {"encode", "decode"} & set(vars(codec))
    return plain and n_samples > STREAM_ABOVE_S * float(codec.sample_rate)


def _device(codec) -> Any:
    return next(iter(codec.parameters()), torch.zeros(())).device if hasattr(codec, "parameters") else "cpu"


@torch.no_grad()
def encode(codec, audio: np.ndarray) -> torch.Tensor:
    """Codes [1, num_codebooks, frames] of one utterance (offline, or streamed when it is long)."""
    wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).view(1, 1, -1).to(_device(codec))
    if not streams(codec, wav.shape[-1]):
        return codec.encode(wav)
    from reference_model import CodecStreamer

    fs = int(codec.frame_size)
    wav = torch.nn.functional.pad(wav, (0, (-wav.shape[-1]) % fs))  # whole frames, as offline
    streamer = CodecStreamer(codec)
    codes = [streamer.encode(wav[..., i : i + fs]) for i in range(0, wav.shape[-1], fs)]
    return torch.cat(codes + [streamer.flush()], dim=-1)  # flush: a multi-rate codec's last window


@torch.no_grad()
def decode(codec, codes: torch.Tensor, n: int, length: int) -> np.ndarray:
    """Waveform from the first n codebooks, cut to the input length (the codec pads to whole frames)."""
    if not streams(codec, length):
        return codec.decode(codes[:, :n])[0, 0, :length].float().cpu().numpy()
    from reference_model import CodecStreamer

    streamer = CodecStreamer(codec)
    fs, delay = int(codec.frame_size), int(getattr(codec, "decode_delay", 0))
    out = np.empty(codes.shape[-1] * fs + delay, dtype=np.float32)
    for f in range(codes.shape[-1]):
        out[f * fs : (f + 1) * fs] = streamer.decode(codes[:, :n, f : f + 1])[0, 0].float().cpu().numpy()
    out[codes.shape[-1] * fs :] = streamer.decode_tail()[0, 0].float().cpu().numpy()
    return out[delay : delay + length]  # a delayed decoder's stream, aligned with the input as offline


def roundtrip(codec, audio: np.ndarray, n: int | None = None) -> np.ndarray:
    codes = encode(codec, audio)
    return decode(codec, codes, n or codes.shape[1], audio.size)


def sweep_codebooks(codec, requested: list[int]) -> list[int]:
    """The requested numbers of codebooks this codec can decode from, capped at all it has (not at the
    share it encodes for the LM: 8 of the tiny codec's and Mimi's 32); run them under ``codebooks_in_use``."""
    top = int(getattr(codec, "max_codebooks", codec.num_codebooks))
    return sorted({min(int(n), top) for n in requested if int(n) >= 1})


@contextlib.contextmanager
def codebooks_in_use(codec, n: int) -> Iterator[None]:
    """The codec encoding its first ``n`` codebooks for the span of a sweep, then the share it had (a codec
    without ``set_num_codebooks`` keeps its own). RVQ codes of the first k levels do not depend on how many
    levels follow, so the rows at n <= the LM's share are what they were."""
    keep = int(codec.num_codebooks)
    settable = hasattr(codec, "set_num_codebooks") and n != keep
    if settable:
        codec.set_num_codebooks(n)
    try:
        yield
    finally:
        if settable:
            codec.set_num_codebooks(keep)

"""MimiCodec: SEANet encoder -> transformer -> learned stride-2 downsample -> split RVQ, and back through
a channel-wise transposed upsample -> transformer -> SEANet decoder. Keys match moshi's ``MimiModel``.
The config's ``encoder`` / ``decoder`` sections swap a SEANet side for a spectral one (stft_encoder.py,
istft.py); the Mimi preset keeps both SEANet sides.

Offline ``encode``/``decode`` run the same causal arithmetic as streaming (``CodecStreamer``), which feeds
one 80 ms frame at a time through the ``*_step`` methods with explicit per-stream state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import CodecConfig
from .conv import StreamingConv1d, StreamingConvTranspose1d
from .istft import ISTFTDecoder
from .quantizer import SplitResidualVectorQuantizer
from .seanet import SEANetDecoder, SEANetEncoder
from .stft_encoder import STFTEncoder
from .transformer import ProjectedTransformer, TransformerState


class ConvDownsample1d(nn.Module):
    """Learned stride-``stride`` conv, kernel ``2*stride``, replicate-padded (keys ``conv.conv.conv``)."""

    def __init__(self, stride: int, dimension: int) -> None:
        super().__init__()
        self.conv = StreamingConv1d(
            dimension, dimension, kernel_size=2 * stride, stride=stride, bias=False, pad_mode="replicate"
        )

    def new_state(self, batch_size: int):
        return self.conv.new_state(batch_size)

    def forward(self, x: torch.Tensor, state=None) -> torch.Tensor:
        return self.conv(x, state)


class ConvTrUpsample1d(nn.Module):
    """Channel-wise transposed conv upsample, kernel ``2*stride`` (keys ``convtr.convtr.convtr``)."""

    def __init__(self, stride: int, dimension: int) -> None:
        super().__init__()
        self.convtr = StreamingConvTranspose1d(
            dimension, dimension, kernel_size=2 * stride, stride=stride, groups=dimension, bias=False
        )

    def new_state(self, batch_size: int):
        return self.convtr.new_state(batch_size)

    def forward(self, x: torch.Tensor, state=None) -> torch.Tensor:
        return self.convtr(x, state)


@dataclass
class EncoderState:
    seanet: object  # the SEANet encoder's conv states, or the STFT encoder's state
    transformer: TransformerState
    downsample: object


@dataclass
class DecoderState:
    upsample: object
    transformer: TransformerState
    seanet: object  # the SEANet decoder's conv states, or the iSTFT decoder's state


class MimiCodec(nn.Module):
    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        if config.encoder is None:
            self.encoder: nn.Module = SEANetEncoder(**config.seanet)
        else:
            self.encoder = STFTEncoder(config.seanet["dimension"], config.hop_length, **config.encoder)
        if config.decoder is None:
            self.decoder: nn.Module = SEANetDecoder(**config.seanet)
        else:
            self.decoder = ISTFTDecoder(
                config.seanet["dimension"], config.encoder_frame_rate, config.sample_rate, **config.decoder
            )
        # samples the streamed waveform lags the offline one (offline decode is aligned with the input)
        self.decode_delay: int = config.decoder_delay
        tr = dict(config.transformer)
        self.encoder_transformer = ProjectedTransformer(**tr)
        self.decoder_transformer = ProjectedTransformer(**tr)
        q = dict(config.quantizer)
        self.quantizer = SplitResidualVectorQuantizer(n_q_semantic=config.n_q_semantic, **q)
        self.dimension = config.seanet["dimension"]
        self.stride = config.downsample_stride
        if self.stride > 1:
            self.downsample = ConvDownsample1d(self.stride, self.dimension)
            self.upsample = ConvTrUpsample1d(self.stride, self.dimension)
        self.sample_rate: int = config.sample_rate
        self.frame_rate: float = config.frame_rate
        self.frame_size: int = config.frame_size
        self.channels: int = config.channels
        self._steps_per_frame = self.frame_size // config.hop_length

    # --- codebooks ----------------------------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    @property
    def max_codebooks(self) -> int:
        return self.quantizer.total_codebooks

    total_codebooks = max_codebooks

    @property
    def cardinality(self) -> int:
        return self.quantizer.cardinality

    def set_num_codebooks(self, n: int) -> None:
        self.quantizer.set_num_codebooks(n)

    # --- offline ------------------------------------------------------------------------------------
    def encode_latent(self, wav: torch.Tensor, state: EncoderState | None = None) -> torch.Tensor:
        """[B, 1, T] (T a multiple of frame_size) -> unquantized latent [B, dimension, T / frame_size]."""
        emb = self.encoder(wav, None if state is None else state.seanet)
        emb = self.encoder_transformer(emb, None if state is None else state.transformer)
        if self.stride > 1:
            emb = self.downsample(emb, None if state is None else state.downsample)
        return emb

    def decode_latent(self, emb: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        """Quantized latent [B, dimension, F] -> waveform [B, 1, F * frame_size]."""
        if self.stride > 1:
            emb = self.upsample(emb, None if state is None else state.upsample)
        emb = self.decoder_transformer(emb, None if state is None else state.transformer)
        return self.decoder(emb, None if state is None else state.seanet)

    def _check_wav(self, wav: torch.Tensor) -> None:
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"codec input must be [B, {self.channels}, T], got {list(wav.shape)}")

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.max_codebooks:
            raise ValueError(f"codes must be [B, 1..{self.max_codebooks}, frames], got {list(codes.shape)}")
        if codes.dtype.is_floating_point:
            raise ValueError(f"codes must be integers, got {codes.dtype}")

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, 1, T] -> codes [B, num_codebooks, ceil(T / frame_size)] (zero-padded to whole frames)."""
        self._check_wav(wav)
        pad = (-wav.shape[-1]) % self.frame_size
        if pad or wav.shape[-1] == 0:
            wav = nn.functional.pad(wav, (0, pad if wav.shape[-1] else self.frame_size))
        return self.quantizer.encode(self.encode_latent(wav))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, F] (first K codebooks; missing ones contribute nothing) -> [B, 1, F * frame_size]."""
        self._check_codes(codes)
        return self.decode_latent(self.quantizer.decode(codes))

    def forward(self, wav: torch.Tensor, n_q: int | None = None, bypass: torch.Tensor | None = None):
        """Training pass: (reconstruction [B, 1, T], codes, commitment loss); T a multiple of frame_size.
        ``bypass`` [B] bool: items decoded from the unquantized latent (see the quantizer)."""
        self._check_wav(wav)
        quantized, codes, commit = self.quantizer(self.encode_latent(wav), n_q, bypass)
        return self.decode_latent(quantized), codes, commit

    # --- streaming ----------------------------------------------------------------------------------
    def new_encoder_state(self, batch_size: int) -> EncoderState:
        return EncoderState(
            self.encoder.new_state(batch_size),
            self.encoder_transformer.new_state(batch_size, self._steps_per_frame),
            self.downsample.new_state(batch_size) if self.stride > 1 else None,
        )

    def new_decoder_state(self, batch_size: int) -> DecoderState:
        return DecoderState(
            self.upsample.new_state(batch_size) if self.stride > 1 else None,
            self.decoder_transformer.new_state(batch_size, self._steps_per_frame),
            self.decoder.new_state(batch_size),
        )

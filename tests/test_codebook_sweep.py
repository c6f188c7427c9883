"""A codec sweep reads every codebook the codec has, not only the share it encodes for the LM (8 of 32):
the 16- and 32-codebook rows were once the 8-codebook row repeated."""

from __future__ import annotations

import numpy as np
import torch

from reference_model import load_codec
from vemi_eval.data.codec_roundtrip import codebooks_in_use, decode, encode, sweep_codebooks


def test_the_sweep_reaches_every_codebook_and_restores_the_lms_share() -> None:
    torch.manual_seed(0)
    codec = load_codec("tiny", "random")  # 8 of 32 in use, as the duplex has it
    assert (codec.num_codebooks, codec.max_codebooks) == (8, 32)
    ns = sweep_codebooks(codec, [2, 8, 16, 32, 64])
    assert ns == [2, 8, 16, 32]
    audio = np.random.default_rng(0).standard_normal(codec.frame_size * 4).astype(np.float32) * 0.1
    eight = encode(codec, audio)
    with codebooks_in_use(codec, max(ns)):
        codes = encode(codec, audio)
        assert codes.shape[1] == 32
        assert torch.equal(codes[:, :8], eight)  # the first levels' codes do not depend on those after
        at8, at32 = (decode(codec, codes, n, audio.size) for n in (8, 32))
    assert codec.num_codebooks == 8
    assert not np.allclose(at8, at32)

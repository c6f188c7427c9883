"""The LM/codec pair check: an LM runs only with the codec whose codes it learned (same file, or the same
tokeniser tensors under a retrained decoder); any other pair is refused before weights load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import reference_model as rm
from reference_model.codec import MimiCodec, codec_config
from reference_model.errors import CheckpointError
from reference_model.pairing import check_pair, file_sha256, tokenizer_sha256
from vemi_eval.training.state import write_weights

BUNDLED_LM = rm.bundled_lm_weights("tiny")
BUNDLED_CODEC = rm.bundled_codec_weights("tiny")


def _lm_copy(tmp_path, **record) -> str:
    lm = tmp_path / "lm.safetensors"
    shutil.copy(BUNDLED_LM, lm)
    lm.with_suffix(".json").write_text(json.dumps(record))
    return str(lm)


def test_the_bundled_pair_passes_and_says_how():
    # the LM learned the continued istft-full's codes; the bundled codec is that file with its decoder
    # trained further (tokeniser frozen), so the pair passes on the tokeniser, not the file
    assert check_pair(BUNDLED_LM, BUNDLED_CODEC).status == "same tokeniser"
    duplex = rm.build_duplex(rm.DuplexSpec(lm="tiny", codec="tiny"))
    assert duplex.pairing.status == "same tokeniser"


def test_another_codec_is_refused_before_loading_with_one_line_naming_both(tmp_path):
    torch.manual_seed(0)
    other = tmp_path / "other_codec.safetensors"
    write_weights(other, MimiCodec(codec_config("tiny")).state_dict(), {"preset": "tiny"})
    with pytest.raises(CheckpointError) as e:
        rm.build_duplex(rm.DuplexSpec(lm="tiny", codec="tiny", codec_checkpoint=str(other)))
    msg = str(e.value)
    assert "\n" not in msg and "tiny_lm.safetensors" in msg and str(other) in msg


def test_a_codec_with_the_same_tokeniser_and_a_new_decoder_pairs(tmp_path):
    # the file's own tensors, in their stored dtypes (the tokeniser hash covers dtypes)
    state = load_file(BUNDLED_CODEC)

    def nudged(pre: str) -> dict:
        return {k: v + 0.01 if k.startswith(pre) and v.is_floating_point() else v for k, v in state.items()}

    retrained = nudged("decoder.")
    path = tmp_path / "new_decoder.safetensors"
    write_weights(path, retrained, {"preset": "tiny"})
    assert file_sha256(path) != file_sha256(BUNDLED_CODEC)
    assert tokenizer_sha256(path) == tokenizer_sha256(BUNDLED_CODEC)
    assert check_pair(BUNDLED_LM, path).status == "same tokeniser"
    moved = nudged("encoder.")
    write_weights(path, moved, {"preset": "tiny"})
    with pytest.raises(CheckpointError, match="retrain the LM"):
        check_pair(BUNDLED_LM, path)


def test_unrecorded_pairs_are_not_checked_and_say_so(tmp_path):
    assert check_pair(None, BUNDLED_CODEC).status.startswith("not checked")
    assert check_pair(_lm_copy(tmp_path, recipe={}), BUNDLED_CODEC).status.startswith("not checked")
    (tmp_path / "lm.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="sidecar"):
        check_pair(tmp_path / "lm.safetensors", BUNDLED_CODEC)

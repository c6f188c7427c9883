"""results.json says whether the LM and codec weights are trained (which file) or random."""

from __future__ import annotations

from reference_model.lm import load_lm
from reference_model.lm.load import BUNDLED
from vemi_eval.runner import weights_provenance


def test_provenance_of_bundled_given_and_random_weights(tmp_path):
    spec = {"lm": "tiny", "codec": "tiny", "lm_checkpoint": None, "codec_checkpoint": None}
    got = weights_provenance(spec)
    assert got["codec"] == "trained, bundled tiny_codec.safetensors"
    if BUNDLED["tiny"].is_file():
        assert got["lm"] == "trained, bundled tiny_lm.safetensors"
    else:
        assert got["lm"].startswith("random")
    assert weights_provenance({**spec, "lm_checkpoint": "random"})["lm"] == "random (asked for)"
    assert weights_provenance({**spec, "lm": "moshi-7b"})["lm"].startswith("random")
    assert (
        weights_provenance({**spec, "lm_checkpoint": "/x/w.safetensors"})["lm"]
        == "checkpoint /x/w.safetensors"
    )


def test_loaded_lm_says_which_weights_it_has():
    assert load_lm("tiny", "random").checkpoint is None
    lm = load_lm("tiny")
    assert lm.checkpoint == (str(BUNDLED["tiny"]) if BUNDLED["tiny"].is_file() else None)

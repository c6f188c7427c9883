"""A Moshi-shaped LM's text stream through the --data path: the 7B-shaped preset's token spaces (text card
32000, its padding ids from its config, 16 codebooks, its delays) at a small width with random weights,
the tiny codec, and a SentencePiece tokenizer file: it builds, streams one FDB sample, and its text stream
is decoded by that tokenizer; without the tokenizer the run stops (the word vocabulary cannot read it).

(The full-width 7B-shaped preset takes ~100 s of one CPU thread to draw and 6 GB: that check belongs to a
GPU session, scripts/gpu_check.py's kind of run.)"""

from __future__ import annotations

import io
import json

import pytest
import soundfile as sf
import torch

from reference_model import DuplexSpec, build_duplex
from reference_model.config import LM_PRESETS, PRESETS_DIR
from tests.duplex_fixtures import fdb_sample, speechlike, turn_taking
from vemi_eval.data import DataError
from vemi_eval.measurements import MeasureContext, VariantRef
from vemi_eval.measurements.dialogue import measure_dialogue


def moshi_shaped_small() -> dict:
    cfg = json.loads((PRESETS_DIR / LM_PRESETS["moshi-7b-shaped"]).read_text())
    assert cfg["text_card"] == 32000 and cfg["existing_text_padding_id"] == 3
    small = dict(dim=64, num_heads=4, num_layers=1, depformer_dim=64, depformer_num_heads=4)
    return {**cfg, **small, "depformer_num_layers": 1, "depformer_dim_feedforward": 128}


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    import sentencepiece as spm

    buf = io.BytesIO()
    sentences = ["hello how can i help you today", "what comes after seven", "eight is next"] * 5
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=30,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("tok") / "tokenizer_spm_tiny.model"
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.slow
def test_moshi_token_spaces_stream_an_fdb_sample_with_its_tokenizer(tmp_path, spm_model):
    torch.set_num_threads(1)
    model = build_duplex(DuplexSpec(lm=moshi_shaped_small(), codec="tiny", seed=0))
    assert model.lm.text_card == 32000 and model.lm.text_padding_token_id == 3
    data = tmp_path / "fdb"
    fdb_sample(data / "1", "turn_taking.json", turn_taking(1.6), seconds=2.0)
    voice = tmp_path / "voice.wav"
    sf.write(str(voice), speechlike(2.0, [(0.1, 1.9)], rate=24000), 24000)
    ref = VariantRef("moshi-shaped", [], build=lambda **k: model, is_baseline=True)

    def ctx(**data_extra):
        c = MeasureContext(
            "dialogue",
            "dialogue",
            ref,
            ref,
            {"voice_reference": str(voice)},
            0,
            False,
            "cpu",
            data={"dir": str(data), **data_extra},
        )
        c.artifacts = tmp_path / "run" / "dialogue" / "moshi-shaped"
        return c

    with pytest.raises(DataError, match="--text-tokenizer"):
        measure_dialogue(ctx())
    c = ctx(text_tokenizer=str(spm_model))
    records = measure_dialogue(c)
    assert any(r.condition.get("rule") == "vemi" and r.condition.get("source") == "text" for r in records)
    stream = json.loads((c.artifacts / "1" / "text_stream.json").read_text())
    assert stream["tokenizer"] == "sentencepiece tokenizer_spm_tiny.model"
    # random weights over a 32000-id card: pieces beyond the tokenizer's 30 decode to nothing, never
    # to another vocabulary's words
    assert all(isinstance(w["text"], str) for w in stream["words"])
    wav, rate = sf.read(str(c.artifacts / "1" / "output.wav"))
    assert rate == 16000 and wav.shape == (32000,)

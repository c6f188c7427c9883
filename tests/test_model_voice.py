"""The model's own voice as codec training audio (data/model_voice.py) and the decoder recipe that draws
from it (``istft-decoder-voice``): the voice is the dialogue model's, no sentence holds an answer word, the
set is cached by its recipe, crops follow the recipe's share, and the codes stay (the LM keeps pairing)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from reference_model.codec import MimiCodec, codec_config
from reference_model.pairing import tokenizer_sha256
from vemi_eval.data import model_voice
from vemi_eval.data.codec_corpus import TARGET_RMS_DB
from vemi_eval.data.dialogue.spec import MODEL_VOICE, NUMBERS
from vemi_eval.training.codec_audio import TrainingAudio
from vemi_eval.training.codec_recipes import CodecRecipe, named_recipes


def test_sentences_never_say_an_answer_word_and_are_fixed():
    said = model_voice.sentences(300)
    assert said == model_voice.sentences(300)
    words = {w.strip(".").lower() for s in said for w in s.split()}
    assert not words & set(NUMBERS), "a number word would make the answers through the codec seen"


def test_the_set_is_the_model_voice_levelled_and_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("VEMI_CACHE", str(tmp_path))
    size = model_voice.ModelVoiceSize(utterances=3)
    first = model_voice.model_voice_audio(size=size, log=None)
    assert len(first) == 3 and {it["voice"] for it in first.items} == {MODEL_VOICE}
    for i in range(len(first)):
        rms_db = 20 * np.log10(np.sqrt(np.mean(first.utterance(i).astype(np.float64) ** 2)))
        assert abs(rms_db - TARGET_RMS_DB) < 1.0

    def no_festival(*_a, **_k):
        raise AssertionError("the cached set was synthesised again")

    monkeypatch.setattr(model_voice, "festival_batch", no_festival)
    again = model_voice.model_voice_audio(size=size, log=None)
    assert again.sha256 == first.sha256 and again.items == first.items


def _marked_audio(share: float, batch_size: int = 8) -> TrainingAudio:
    """Training audio of +0.5 everywhere, the model voice of -0.5: a crop's sign says where it came from."""
    audio = TrainingAudio.__new__(TrainingAudio)
    audio.audio = np.full(48000, 16000, dtype=np.int16)
    audio.offsets = np.array([0, 24000, 48000])
    audio.voice_audio = np.full(36000, -16000, dtype=np.int16)
    audio.voice_offsets = np.array([0, 12000, 36000])
    audio.summary = {"corpus": "marked"}
    audio.recipe = CodecRecipe(batch_size=batch_size, gain_jitter_db=0.0, model_voice_share=share)
    return audio


def test_crops_follow_the_model_voice_share():
    rng = np.random.default_rng(0)
    signs = np.concatenate(
        [np.sign(_marked_audio(0.5).batch(rng, 4800)[:, 0, 0].numpy()) for _ in range(100)]
    )
    assert abs(float(np.mean(signs < 0)) - 0.5) < 0.06
    off = _marked_audio(0.0)
    assert (off.batch(np.random.default_rng(0), 4800) > 0).all()
    # off, the crops are those drawn before the option existed (no extra random draw): resumes stay exact
    torch.testing.assert_close(
        off.batch(np.random.default_rng(3), 4800), _crops_before(off, np.random.default_rng(3), 4800)
    )


def _crops_before(audio: TrainingAudio, rng: np.random.Generator, length: int) -> torch.Tensor:
    """``TrainingAudio.batch`` as it was before ``model_voice_share`` (commit 3810bdf)."""
    b = audio.recipe.batch_size
    out = np.zeros((b, 1, length), dtype=np.float32)
    n = len(audio.offsets) - 1
    for i in range(b):
        k = int(rng.integers(n))
        lo, hi = int(audio.offsets[k]), int(audio.offsets[k + 1])
        if hi - lo <= length:
            start = int(rng.integers(0, length - (hi - lo) + 1))
            out[i, 0, start : start + hi - lo] = audio.audio[lo:hi] / 32767.0
        else:
            s = int(rng.integers(lo, hi - length + 1))
            out[i, 0] = audio.audio[s : s + length] / 32767.0
        j = audio.recipe.gain_jitter_db
        out[i] *= 10 ** (rng.uniform(-j, j / 2) / 20)
    return torch.from_numpy(out)


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="model_voice_share must be in"):
        TrainingAudio(CodecRecipe(model_voice_share=1.5), 24000, log=None)


def test_the_voice_recipe_trains_the_decoder_on_frozen_codes(tmp_path):
    from vemi_eval.training.codec import train_codec
    from vemi_eval.training.state import write_weights

    recipe = named_recipes()["istft-decoder-voice"]
    assert recipe.model_voice_share == 0.5 and recipe.train_parts == "decoder"
    torch.manual_seed(0)
    start, out = tmp_path / "start.safetensors", tmp_path / "voice.safetensors"
    write_weights(start, MimiCodec(codec_config("tiny-istft")).state_dict(), {"preset": "tiny-istft"})
    audio = _marked_audio(0.5, batch_size=2)
    audio.recipe = dataclasses.replace(recipe, batch_size=2, segment_frames=2, warmup_steps=1)
    info = train_codec(out, minutes=1, recipe=audio.recipe, max_steps=2, evaluate=False, init_from=start,
                       audio=audio, log=lambda m: None, checkpoint_every_s=0.0, clock="cpu")  # fmt: skip
    assert info["frozen"] and info["codes_digest"] == info["codes_digest_at_start"]
    assert tokenizer_sha256(out) == tokenizer_sha256(start)

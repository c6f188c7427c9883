"""Recipe option speaker-cond (6.2): the conditioning starts at the plain model and exports into it
exactly; the consistency loss moves only the acoustic codebooks' predictions; the trainer records it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reference_model.checkpoint import read_safetensors
from reference_model.lm import Streamer, load_lm
from tests.test_training_lm import SMALL, _random_codes, _task_data
from vemi_eval.training.lm import LossWeights, moshi_loss, teacher_forced_logits, train_lm
from vemi_eval.training.lm_options import speaker
from vemi_eval.training.lm_options.speaker import SpeakerCond


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_zero_projection_leaves_logits_identical():
    lm = load_lm(SMALL)
    cond = speaker.SpeakerConditioning(torch.randn(16), SMALL["dim"])
    codes = _random_codes(SMALL, 2, 10)
    with torch.no_grad():
        plain = teacher_forced_logits(lm, codes)
        with_cond = teacher_forced_logits(lm, codes, input_offset=cond())
    assert all(torch.equal(a, b) for a, b in zip(plain, with_cond))


def test_a_trained_offset_folds_exactly_into_the_text_embedding():
    torch.manual_seed(0)
    lm = load_lm(SMALL)
    cond = speaker.SpeakerConditioning(torch.randn(16), SMALL["dim"])
    torch.nn.init.normal_(cond.proj.weight, std=0.1)
    codes = _random_codes(SMALL, 2, 10)
    folded = load_lm(SMALL)
    folded.load_state_dict(speaker.fold_offset(lm.state_dict(), cond().detach()))
    with torch.no_grad():
        conditioned = teacher_forced_logits(lm, codes, input_offset=cond())
        plain = teacher_forced_logits(lm, codes)
        exported = teacher_forced_logits(folded, codes)
    torch.testing.assert_close(exported[0], conditioned[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(exported[1], conditioned[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain[0], conditioned[0])  # the offset does something
    # and streaming: the exported plain model == the conditioned model fed the same offset per step
    user = torch.randint(0, SMALL["card"], (1, 2, 6))
    a, b = Streamer(folded, temp=0.0, temp_text=0.0), Streamer(lm, temp=0.0, temp_text=0.0)
    b.condition = cond().detach()
    for o in range(6):
        a.step(user[:, :, o : o + 1])
        b.step(user[:, :, o : o + 1])
        torch.testing.assert_close(a.last_text_logits, b.last_text_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.last_audio_logits, b.last_audio_logits, rtol=1e-5, atol=1e-5)


def test_consistency_kl_is_zero_at_the_voice_and_moves_only_acoustic_codebooks():
    F, dep_q, card, silence = 6, 3, 5, 0
    voice = torch.tensor([[0.0, 0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25, 0.0]])
    targets = torch.tensor([[1, 2, 3]] * 5 + [[silence, 1, 1]])
    valid = torch.ones(F, dep_q, dtype=torch.bool)
    at_voice = torch.full((F, dep_q, card), -1e9)
    at_voice[:, 1:] = torch.log(voice.clamp(min=1e-12))
    assert float(speaker.consistency_kl(at_voice, targets, valid, voice, silence)) == pytest.approx(
        0, abs=1e-6
    )
    logits = torch.randn(F, dep_q, card, requires_grad=True)
    kl = speaker.consistency_kl(logits, targets, valid, voice, silence)
    assert float(kl.detach()) > 0
    kl.backward()
    assert torch.equal(logits.grad[:, 0], torch.zeros(F, card))  # the semantic codebook: untouched
    assert torch.equal(logits.grad[-1], torch.zeros(dep_q, card))  # a silence frame: untouched
    assert logits.grad[:5, 1:].abs().sum() > 0


def test_voice_histograms_count_speech_frames_only():
    g = torch.tensor([[3] * 4, [7, 7, 1, 2], [4, 4, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    hist, frames = speaker.voice_histograms([g], dep_q=2, card=5, silence=7)
    assert frames == 2 and torch.equal(hist[0], torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0]))


@pytest.fixture
def fake_voice(monkeypatch):
    """No festival/resemblyzer/codec in the trainer tests: a fixed embedding and silence code 0."""
    monkeypatch.setattr(speaker, "reference_embedding", lambda: np.linspace(-1, 1, 16, dtype=np.float32))
    monkeypatch.setattr(speaker, "silence_code", lambda ckpt: 0)


def _train(tmp_path, name, **kw):
    opts = dict(
        config=SMALL, max_steps=4, batch_size=4, seq_len=24, warmup_steps=1, lr=3e-3, log=lambda m: None
    )
    opts.update(kw)
    return train_lm(tmp_path / f"{name}.safetensors", _task_data(), **opts)


def test_trainer_records_the_option_exports_a_plain_model_and_resumes(tmp_path, fake_voice):
    plain = _train(tmp_path, "plain")
    full = _train(tmp_path, "full", options=[SpeakerCond()])
    assert full["trained_with"] == ["speaker-cond"] and plain["trained_with"] == []
    assert full["recipe_digest"] != plain["recipe_digest"]
    report = full["options"]["speaker-cond"]
    assert report["offset_norm"] > 0 and report["speaker_kl_first_last"][0] > 0
    loss_only = _train(tmp_path, "loss", options=[SpeakerCond(conditioning=False)])
    assert loss_only["recipe_digest"] != full["recipe_digest"]
    load_lm(SMALL, tmp_path / "full.safetensors")  # strict: the plain model's keys
    stopped = _train(tmp_path, "part", options=[SpeakerCond()], stop_after_steps=2)
    assert stopped["stopped_at"] == 2
    resumed = _train(tmp_path, "part", options=[SpeakerCond()])
    assert resumed["resumed_from"]["step"] == 2
    a, b = read_safetensors(tmp_path / "full.safetensors"), read_safetensors(tmp_path / "part.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(Exception, match="another recipe"):
        _train(tmp_path, "part", stop_after_steps=1)  # the plain recipe on the option's state


def test_warm_start_with_the_option_begins_at_the_plain_model(tmp_path, fake_voice):
    _train(tmp_path, "init", max_steps=2)
    start = load_lm(SMALL, tmp_path / "init.safetensors")
    codes = _task_data(2, seed=3).grids[0][None, :, :24]
    info = _train(tmp_path, "warm", options=[SpeakerCond()], init_from=tmp_path / "init.safetensors", lr=0.0)
    warm = load_lm(SMALL, tmp_path / "warm.safetensors")
    assert all(torch.equal(v, warm.state_dict()[k]) for k, v in start.state_dict().items())
    with torch.no_grad():
        assert moshi_loss(start, codes, LossWeights()).text == moshi_loss(warm, codes, LossWeights()).text
    assert info["recipe"]["init_from"]["sha256"]
    assert json.loads((tmp_path / "warm.json").read_text())["trained_with"] == ["speaker-cond"]

"""ASR (faster-whisper, bundled tiny.en), WER normalisation, and speaker similarity / EER on the corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vemi_eval.data.corpus import espeak_corpus
from vemi_eval.evaluators import EvaluatorError
from vemi_eval.evaluators import speaker as spk
from vemi_eval.evaluators.wer import cer, error_counts, normalize, wer

# Measured: WER 0.33 on the quick held-out corpus at beam 5 (12 utterances, 4 unseen speakers).
ASR_WER_BOUND = 0.40


@pytest.fixture(scope="module")
def heldout():
    torch.set_num_threads(1)
    return espeak_corpus("heldout", quick=True, sample_rate=16000)


def test_normalisation_is_shared_and_spells_numbers():
    assert normalize("Don't stop: 700 People & 4am!") == "dont stop seven hundred people and four am"
    assert normalize("Twenty-one") == normalize("21") == "twenty one"
    assert wer(["the cat sat"], ["The cat, sat."]) == 0.0
    assert wer(["a b c d"], ["a x c"]) == pytest.approx(0.5)
    assert cer(["abcd"], ["abxd"]) == pytest.approx(0.25)
    assert error_counts("a b", "a b c") == {"words": 2, "word_errors": 1, "chars": 3, "char_errors": 2}
    with pytest.raises(EvaluatorError, match="empty"):
        wer(["..."], ["x"])


def test_asr_wer_on_clean_heldout_corpus(heldout):
    from vemi_eval.evaluators.asr import transcribe

    hyps = [transcribe(u.audio, u.sample_rate, beam_size=5) for u in heldout]
    value = wer([u.text for u in heldout], hyps)
    assert value < ASR_WER_BOUND, (value, hyps)
    assert transcribe(heldout[0].audio, 16000) == hyps[0]  # deterministic decoding


def test_asr_missing_model_is_an_error(tmp_path):
    from vemi_eval.evaluators.asr import transcribe

    with pytest.raises(EvaluatorError, match="model.bin"):
        transcribe(np.ones(16000, np.float32), 16000, model_dir=tmp_path)


def test_same_speaker_scores_above_different_speaker(heldout):
    emb = [spk.embed(u.audio, u.sample_rate) for u in heldout]
    same, diff = [], []
    for i in range(len(heldout)):
        for j in range(i + 1, len(heldout)):
            s = spk.similarity(emb[i], emb[j])
            (same if heldout[i].speaker == heldout[j].speaker else diff).append(s)
    assert np.mean(same) > np.mean(diff) + 0.1
    labels = np.array([heldout[i].speaker == heldout[j].speaker for i in range(12) for j in range(i + 1, 12)])
    scores = np.array([spk.similarity(emb[i], emb[j]) for i in range(12) for j in range(i + 1, 12)])
    value, _ = spk.eer(scores, labels)
    assert value < 0.2
    with pytest.raises(EvaluatorError, match="speech"):
        spk.embed(np.full(16000, 1e-6, np.float32), 16000)  # nothing the VAD calls speech


def test_eer_values():
    assert spk.eer(np.array([0.9, 0.8, 0.3, 0.2]), np.array([1, 1, 0, 0], bool))[0] == 0.0
    assert spk.eer(np.array([0.2, 0.3, 0.8, 0.9]), np.array([1, 1, 0, 0], bool))[0] == 1.0
    assert spk.eer(np.array([0.9, 0.5, 0.7, 0.6, 0.2, 0.1]), np.array([1, 1, 1, 0, 0, 0], bool))[0] == (
        pytest.approx(1 / 3)
    )
    with pytest.raises(EvaluatorError):
        spk.eer(np.array([0.5, 0.6]), np.array([True, True]))

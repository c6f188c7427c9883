"""The lm_heldout measurement: its teacher-forced figures are the trainer's (same objective, same
windows), the text-only path agrees with the full one, and its parameters and claims are declared."""

from __future__ import annotations

import pytest
import torch

from reference_model.lm import load_lm
from tests.test_training_lm import SMALL, _task_data
from vemi_eval.measurements import claim_rules
from vemi_eval.measurements.lm_heldout import PARAMS, check, hits_by_voice, score_grids
from vemi_eval.training.lm import LossWeights, evaluate


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return load_lm(SMALL, "random")


def test_scores_are_the_trainers_held_out_figures(lm):
    grids = _task_data(5, T=50, seed=2).grids
    spans = [[(3, 9), (20, 26)] for _ in grids]
    full = score_grids(lm, grids, spans, 24, with_audio=True)
    text_only = score_grids(lm, grids, spans, 24, with_audio=False)
    ref = evaluate(lm, grids, 24, LossWeights())
    assert len(full.answer_hits) == ref["text_words"] > 0
    assert sum(full.answer_hits) / len(full.answer_hits) == pytest.approx(
        ref["text_word_accuracy_teacher_forced"]
    )
    assert sum(full.text_ce) / len(full.text_ce) == pytest.approx(ref["text_loss"], rel=1e-6)
    assert sum(full.audio_ce) / len(full.audio_ce) == pytest.approx(ref["audio_loss"], rel=1e-6)
    # the text stream's figures do not need the depth transformer
    assert text_only.answer_hits == full.answer_hits
    assert text_only.text_ce == pytest.approx(full.text_ce, rel=1e-6)
    assert text_only.audio_ce == [] and text_only.answer_audio_acc == []
    assert len(full.answer_audio_acc) == 2 * len(grids)
    assert all(0.0 <= a <= 1.0 for a in full.answer_audio_acc)
    # per voice: every answer word counted once, under its grid's voice
    voices = ["v0", "v1", "v0", "v2", "v1"]
    by = hits_by_voice(full, voices)
    assert sum(v["words"] for v in by.values()) == len(full.answer_hits)
    assert sum(v["correct"] for v in by.values()) == sum(full.answer_hits)
    alone = score_grids(lm, [grids[1], grids[4]], [spans[1], spans[4]], 24, with_audio=False)
    assert by["v1"] == {"correct": int(sum(alone.answer_hits)), "words": len(alone.answer_hits)}


def test_held_out_accuracy_per_group_adds_up_to_the_pooled_one(lm):
    grids = _task_data(5, T=50, seed=2).grids
    labels = ["a", "b", "a", "c", "b"]
    pooled = evaluate(lm, grids, 24, LossWeights())
    grouped = evaluate(lm, grids, 24, LossWeights(), ("voice", labels))
    assert {k: v for k, v in grouped.items() if k != "text_word_accuracy_by_group"} == pooled
    by = grouped["text_word_accuracy_by_group"]
    assert by["by"] == "voice" and sorted(by["of"]) == ["a", "b", "c"]
    for label, tally in by["of"].items():
        alone = evaluate(lm, [g for g, x in zip(grids, labels) if x == label], 24, LossWeights())
        assert tally["words"] == alone["text_words"]
        assert tally["accuracy"] == pytest.approx(alone["text_word_accuracy_teacher_forced"])
    assert sum(t["correct"] for t in by["of"].values()) == round(
        pooled["text_word_accuracy_teacher_forced"] * pooled["text_words"]
    )


def test_held_out_accuracy_per_engine_sums_its_voices(lm):
    """The dialogue corpus's two engines: each engine's tally is the sum of its voices' tallies."""
    grids = _task_data(5, T=50, seed=2).grids
    voices = ["a", "b", "a", "k", "k"]
    engine = {"a": "espeak", "b": "espeak", "k": "festival"}
    out = evaluate(
        lm, grids, 24, LossWeights(), ("voice", voices), ("user engine", [engine[v] for v in voices])
    )
    by_voice, by_engine = out["text_word_accuracy_by_group"]["of"], out["text_word_accuracy_by_engine"]
    assert by_engine["by"] == "user engine" and sorted(by_engine["of"]) == ["espeak", "festival"]
    for e, tally in by_engine["of"].items():
        mine = [t for v, t in by_voice.items() if engine[v] == e]
        assert tally["words"] == sum(t["words"] for t in mine)
        assert tally["correct"] == sum(t["correct"] for t in mine)
    # lm_heldout's by_engine: the same tally from its own scores
    spans = [[(3, 9), (20, 26)] for _ in grids]
    s = score_grids(lm, grids, spans, 24, with_audio=False)
    per_engine = hits_by_voice(s, [engine[v] for v in voices])
    assert sum(t["words"] for t in per_engine.values()) == len(s.answer_hits)


def test_answer_audio_accuracy_reads_the_semantic_codebook(lm):
    """A grid whose semantic codebook equals the LM's own argmax on it scores 1 on those frames."""
    grid = _task_data(1, T=30, seed=4).grids[0]
    first = score_grids(lm, [grid], [[(0, 30)]], 30, with_audio=True)
    from vemi_eval.training.lm import teacher_forced_logits

    _, audio_logits, _ = teacher_forced_logits(lm, grid[None])
    pred = audio_logits[:, 0].argmax(-1)
    d = lm.delays[1]
    expect = (pred[d:] == grid[1, : 30 - d]).float().mean().item()
    assert first.answer_audio_acc[0] == pytest.approx(expect)


def test_params_are_checked():
    check(dict(PARAMS))
    for bad in (
        {"sessions": -1},
        {"noise_types": ["reverb"]},
        {"noise_types": ["rain"]},
        {"reverb_rt60_s": [0]},
        {"snr_db": ["loud"]},
        {"answer_gap_s": -0.2},
        {"audio": "yes"},
    ):
        with pytest.raises(ValueError):
            check({**PARAMS, **bad})


def test_claims_are_declared():
    rules = claim_rules()
    kinds = {m: {k for _, _, k in r} for m, r in rules.items()}
    assert "lm_heldout" in kinds["task_accuracy"] and "lm_heldout" in kinds["wer_noisy"]


def test_token_data_groups_need_every_grid_named():
    from vemi_eval.training.lm import TokenData

    grids = _task_data(2, T=10, seed=1).grids
    of = {"s0": "v1", "s1": "v2"}
    assert TokenData(grids, "x", "x", {"groups": {"by": "voice", "of": of}}, ["s0", "s1"]).groups() == (
        "voice",
        ["v1", "v2"],
    )
    assert TokenData(grids, "x", "x", {}, ["s0", "s1"]).groups() is None
    engines = {"engine_groups": {"by": "user engine", "of": {"s0": "espeak", "s1": "festival"}}}
    assert TokenData(grids, "x", "x", engines, ["s0", "s1"]).groups("engine_groups") == (
        "user engine",
        ["espeak", "festival"],
    )
    assert TokenData(grids, "x", "x", {"groups": {"of": {"s0": "v1"}}}, ["s0", "s1"]).groups() is None

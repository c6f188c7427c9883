"""The loop both trainers share (training/loop.py): each trainer's learning-rate curve is the one it had
before the loop was shared (a resumed training keeps its curve), the budget's limits, and which sidecar
lets a run without its state go on."""

from __future__ import annotations

import json
import math

import pytest

from reference_model.config import load_lm_config
from vemi_eval.training.codec import codec_schedule
from vemi_eval.training.codec_recipes import named_recipes
from vemi_eval.training.lm import LMTrainRecipe, lm_schedule
from vemi_eval.training.loop import Budget, unfinished_run


def _codec_lr_before(base: float, step: int, frac: float, warmup: int) -> float:
    """training/codec.py's ``_lr_at`` before the shared loop."""
    warm = min(1.0, (step + 1) / warmup)
    return base * warm * max(0.05, 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _lm_lr_before(lr: float, warmup: int, floor: float, step: int, progress: float) -> float:
    """training/lm.py's ``lr_at`` before the shared loop."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    cos = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return lr * warm * (floor + (1 - floor) * cos)


POINTS = [(s, f) for s in (0, 1, 5, 99, 100, 101, 5000) for f in (0.0, 0.013, 0.25, 0.5, 0.97, 1.0, 1.3)]


@pytest.mark.parametrize("name", ["v2", "istft-full", "ab-seanet"])
def test_the_codec_schedule_is_bit_identical_to_the_one_before(name):
    r = named_recipes()[name]
    sched = codec_schedule(r)
    assert all(sched.lr(s, f) == _codec_lr_before(r.lr, s, f, r.warmup_steps) for s, f in POINTS)


def test_the_lm_schedule_is_bit_identical_to_the_one_before():
    r = LMTrainRecipe(config=load_lm_config("tiny").to_dict(), data_sha256="d", data_source="s")
    sched = lm_schedule(r)
    expected = [_lm_lr_before(r.lr, r.warmup_steps, r.min_lr_fraction, s, f) for s, f in POINTS]
    assert [sched.lr(s, f) for s, f in POINTS] == expected


def test_a_budget_needs_a_limit_and_a_known_clock():
    with pytest.raises(ValueError, match="minutes"):
        Budget(None, None)
    with pytest.raises(ValueError, match="clock"):
        Budget(60.0, clock="gpu")  # type: ignore[arg-type]
    assert Budget(None, 5).max_steps == 5


def test_only_an_unfinished_run_of_the_same_producer_and_recipe_goes_on_without_its_state(tmp_path):
    weights, sidecar = tmp_path / "w.safetensors", tmp_path / "w.json"
    weights.write_bytes(b"weights")
    good = {"produced_by": "p", "recipe": {"digest": "d"}, "final": False, "steps": 3}
    cases = [
        (good, True),
        ({**good, "final": True}, False),  # finished: nothing to go on with
        ({**good, "steps": 0}, False),
        ({**good, "recipe": {"digest": "other"}}, False),
        ({**good, "produced_by": "another trainer"}, False),
        ([1, 2], False),  # not a sidecar
    ]
    for doc, goes_on in cases:
        sidecar.write_text(json.dumps(doc))
        assert (unfinished_run(weights, "p", "d") is not None) is goes_on, doc
    sidecar.write_text("{torn")
    assert unfinished_run(weights, "p", "d") is None

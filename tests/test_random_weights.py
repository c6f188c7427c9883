"""A large random LM is drawn once into a file; a build from that file is the same model as a fresh draw."""

from __future__ import annotations

import torch

from reference_model import DuplexSpec, build_duplex
from vemi_eval import random_weights


def test_the_cached_draw_is_the_fresh_draw(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VEMI_CACHE", str(tmp_path))
    path = random_weights.random_lm_file("tiny", "random", 7, torch.float32, min_parameters=0)
    assert path is not None and path.parent == tmp_path / "random-lm"
    again = random_weights.random_lm_file("tiny", "random", 7, torch.float32, min_parameters=0)
    assert again == path  # written once
    fresh = build_duplex(DuplexSpec(lm_checkpoint="random", seed=7)).lm.state_dict()
    cached = build_duplex(DuplexSpec(lm_checkpoint=str(path), seed=7)).lm.state_dict()
    assert fresh.keys() == cached.keys()
    assert all(torch.equal(fresh[k], cached[k]) for k in fresh)
    other = random_weights.random_lm_file("tiny", "random", 8, torch.float32, min_parameters=0)
    assert other != path  # the seed is part of the key


def test_only_random_and_large_models_get_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VEMI_CACHE", str(tmp_path))
    assert random_weights.random_lm_file("tiny", None, 0, torch.float32, min_parameters=0) is None  # bundled
    assert random_weights.random_lm_file("tiny", "x.safetensors", 0, torch.float32, min_parameters=0) is None
    assert random_weights.random_lm_file("tiny", "random", 0, torch.float32) is None  # too small
    assert not (tmp_path / "random-lm").exists()

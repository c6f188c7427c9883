"""The trainers' one state mechanism: a resume restores weights, optimiser moments and extras exactly;
another recipe's state is refused before any tensor is loaded; the codec trainer's older layout resumes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vemi_eval.training.state import load_training_state, save_training_state


def _trained_pair(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_is_exact(tmp_path):
    model, opt = _trained_pair(0)
    path = tmp_path / "x.state.safetensors"
    rng = torch.get_rng_state()
    save_training_state(path, model, opt, {"step": 3, "recipe_digest": "abc"}, {"rng.torch": rng})
    other, other_opt = _trained_pair(1)
    meta, extra = load_training_state(path, other, other_opt)
    assert meta["step"] == 3 and torch.equal(extra["rng.torch"], rng)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    a, b = opt.state_dict()["state"][0], other_opt.state_dict()["state"][0]
    assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_another_recipe_is_refused_before_loading(tmp_path):
    model, opt = _trained_pair(0)
    path = tmp_path / "x.state.safetensors"
    save_training_state(path, model, opt, {"recipe_digest": "abc"})
    other, other_opt = _trained_pair(1)
    before = other.weight.detach().clone()

    def check(meta):
        if meta["recipe_digest"] != "zzz":
            raise ValueError("another recipe")

    with pytest.raises(ValueError, match="another recipe"):
        load_training_state(path, other, other_opt, check)
    assert torch.equal(other.weight, before)


def test_the_older_codec_layout_resumes(tmp_path):
    model, opt = _trained_pair(0)
    st = opt.state_dict()
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for pid, s in st["state"].items():
        for name, v in s.items():
            tensors[f"opt.{pid}.{name}"] = torch.as_tensor(v).clone()
    tensors["rng.torch"] = torch.get_rng_state()
    path = tmp_path / "c.state.safetensors"
    save_file(tensors, str(path))
    (tmp_path / "c.state.json").write_text(json.dumps({"step": 9, "param_groups": st["param_groups"]}))
    other, other_opt = _trained_pair(1)
    meta, extra = load_training_state(path, other, other_opt)
    assert meta["step"] == 9 and "rng.torch" in extra
    assert torch.equal(other.weight, model.weight)

"""The bundled LM recipe's noise on the user channel (white, pink, babble 0-30 dB, reverberation): on by
default on the dialogue corpus, in the sidecar's recipe but not in "trained_with" (it is no enhancement
asked for), off with --no-user-noise; an explicit noise-aug sets the noise itself."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import vemi_eval.training.lm as lm_mod
from tests.test_training_lm import SMALL, _task_data
from vemi_eval.data import dialogue
from vemi_eval.training.lm_options import OptionError, build_options
from vemi_eval.training.lm_options.noise_aug import NoiseAugmentation, default_user_noise


def _grids_folder(path, n_streams: int, n: int = 2):
    path.mkdir(parents=True)
    grids = {f"s{i}": torch.zeros(n_streams, 24, dtype=torch.int16) for i in range(n)}
    save_file(grids, str(path / "x.safetensors"))
    return path


def _options_of_the_corpus_recipe(tmp_path, monkeypatch, **kwargs):
    """The options train_tiny_dialogue hands the trainer on the corpus (no tokenising, no training)."""
    folder = _grids_folder(tmp_path / "grids", 17)
    monkeypatch.setattr(dialogue, "tokenised_split", lambda *a, **k: folder)
    seen: dict = {}
    monkeypatch.setattr(lm_mod, "train_lm", lambda out, train, **k: seen.update(k) or {})
    lm_mod.train_tiny_dialogue(tmp_path / "lm.safetensors", log=lambda m: None, **kwargs)
    return seen.get("options") or []


def test_the_corpus_recipe_puts_noise_on_the_user_channel_by_default(tmp_path, monkeypatch):
    (noise,) = _options_of_the_corpus_recipe(tmp_path, monkeypatch)
    assert isinstance(noise, NoiseAugmentation) and noise.in_base_recipe
    assert set(noise.kinds) == {"white", "pink", "babble", "reverb"} and tuple(noise.snr_db) == (0.0, 30.0)
    rec = noise.recipe()
    assert rec["base_recipe"] is True and rec["kinds"] == ["white", "pink", "babble", "reverb"]


def test_no_user_noise_turns_it_off_and_an_explicit_noise_aug_replaces_it(tmp_path, monkeypatch):
    assert _options_of_the_corpus_recipe(tmp_path / "a", monkeypatch, user_noise=False) == []
    explicit = build_options(["noise-aug"], {"noise-aug": {"snr_db": "5,15"}})
    (noise,) = _options_of_the_corpus_recipe(tmp_path / "b", monkeypatch, options=explicit)
    assert noise is explicit[0] and not noise.in_base_recipe and "base_recipe" not in noise.recipe()


@pytest.mark.parametrize("option", ["latency-curriculum", "dpo"])
def test_an_option_the_noise_cannot_go_with_asks_for_no_user_noise(tmp_path, monkeypatch, option):
    with pytest.raises(OptionError, match="--no-user-noise"):
        _options_of_the_corpus_recipe(tmp_path, monkeypatch, options=build_options([option]))


def test_no_user_noise_has_no_use_with_data(tmp_path):
    folder = _grids_folder(tmp_path / "grids", 17)
    with pytest.raises(lm_mod.TrainDataError, match="--no-user-noise"):
        lm_mod.train_tiny_dialogue(tmp_path / "lm.safetensors", data=folder, user_noise=False)


def test_the_default_noise_is_in_the_sidecars_recipe_not_in_trained_with(tmp_path):
    train = _task_data(4)
    noisy = [g.clone() for g in train.grids]
    for g in noisy:
        g[3:] = (g[3:] + 1) % 20
    copies = tmp_path / "copies"
    copies.mkdir()
    save_file({f"s{i:03d}": g.to(torch.int16) for i, g in enumerate(noisy)}, str(copies / "x.safetensors"))
    noise = default_user_noise()
    noise.copy_data = (str(copies),)  # the corpus's noisy copies, made here by hand
    out = tmp_path / "lm.safetensors"
    side = lm_mod.train_lm(out, train, config=SMALL, max_steps=2, batch_size=2, seq_len=16, options=[noise],
                           log=lambda m: None)  # fmt: skip
    assert side["trained_with"] == []
    written = json.loads(out.with_suffix(".json").read_text())
    (rec,) = written["recipe"]["options"]
    assert rec["name"] == "noise-aug" and rec["base_recipe"] is True and rec["snr_db"] == [0.0, 30.0]
    assert written["options"]["noise-aug"]["augmented_items_this_process"] > 0

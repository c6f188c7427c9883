"""The LM trainer: Moshi's teacher-forced objective (against moshi's own LMModel.forward and against our
streaming inference), loss on the model's streams only, loss falls, resume == uninterrupted, seeds."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from reference_model.checkpoint import read_safetensors
from reference_model.config import PRESETS_DIR
from reference_model.lm import Streamer, load_lm
from vemi_eval.training.lm import (
    LossWeights,
    TokenData,
    TrainDataError,
    load_token_folder,
    moshi_loss,
    teacher_forced_logits,
    train_lm,
)
from vemi_eval.training.state import RecipeMismatchError

os.environ.setdefault("NO_TORCH_COMPILE", "1")

TINY = json.loads((PRESETS_DIR / "tiny_lm.json").read_text())
SMALL = dict(
    TINY,
    dim=32,
    num_heads=2,
    num_layers=2,
    text_card=12,
    card=20,
    n_q=4,
    dep_q=2,
    delays=[0, 0, 1, 0, 1],
    depformer_dim=32,
    depformer_num_heads=2,
    depformer_num_layers=1,
    depformer_dim_feedforward=64,
    context=64,
)


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _random_codes(cfg, B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, cfg["card"], (B, cfg["n_q"] + 1, T), generator=g)
    codes[:, 0] = torch.randint(0, cfg["text_card"], (B, T), generator=g)
    return codes


def _task_data(n=12, T=40, seed=0) -> TokenData:
    """A learnable toy task: the model's streams copy the user's first codebook one frame later."""
    rng = np.random.default_rng(seed)
    grids = []
    for _ in range(n):
        g = torch.full((5, T), 3, dtype=torch.long)
        user = torch.from_numpy(rng.integers(0, 10, T))
        g[3] = user
        g[4] = torch.from_numpy(rng.integers(0, 20, T))
        g[1, 1:] = user[:-1]
        g[2, 1:] = user[:-1] + 10
        g[0, 1:] = torch.where(user[:-1] < 5, user[:-1] + 4, 3)
        grids.append(g)
    return TokenData(grids, f"toy{seed}", "toy")


def test_teacher_forcing_matches_moshi_forward():
    moshi_lm = pytest.importorskip("moshi.models.lm")
    cfg = dict(SMALL)
    kwargs = {k: v for k, v in cfg.items() if k != "depformer_causal"}
    torch.manual_seed(0)
    ref = moshi_lm.LMModel(device="cpu", dtype=torch.float32, **kwargs).eval()
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    ours = load_lm(cfg)
    ours.load_state_dict(state)
    codes = _random_codes(cfg, 2, 10)
    codes[1, :, 7:] = -1  # a padded tail (zero tokens)
    with torch.no_grad():
        out = ref.forward(codes)
        text, audio, _ = teacher_forced_logits(ours, codes)
    audio = audio.view(2, 10, cfg["dep_q"], -1)
    tm = out.text_mask[:, 0]
    torch.testing.assert_close(text[tm], out.text_logits[:, 0][tm], rtol=1e-4, atol=1e-4)
    for k in range(cfg["dep_q"]):
        d = cfg["delays"][1 + k]
        mask = out.mask[:, k]
        mine = torch.full_like(out.logits[:, k], float("nan"))
        mine[:, : 10 - d] = audio[:, d:, k]
        torch.testing.assert_close(mine[mask], out.logits[:, k][mask], rtol=1e-4, atol=1e-4)


def test_teacher_forcing_matches_streaming_inference():
    """Feed the streamer's own outputs back as a token grid: teacher-forced logits == streamed logits."""
    cfg = SMALL
    torch.manual_seed(1)
    lm = load_lm(cfg)
    streamer = Streamer(lm, temp=0.0, temp_text=0.0)
    steps = 9
    user = torch.randint(0, cfg["card"], (1, 2, steps + 1))
    text_logits, audio_logits, outputs = [], [], []
    for o in range(steps + 1):
        out = streamer.step(user[:, :, o : o + 1])
        text_logits.append(streamer.last_text_logits[0])
        audio_logits.append(streamer.last_audio_logits[0])
        if out is not None:
            outputs.append(out[0, :, 0])
    T = len(outputs)  # positions 0..T-1; user frame o is training position o - 1
    codes = torch.zeros(1, 5, T, dtype=torch.long)
    codes[0, :3] = torch.stack(outputs, dim=1)
    codes[0, 3:] = user[0, :, 1 : T + 1]
    with torch.no_grad():
        text, audio, _ = teacher_forced_logits(lm, codes)
    torch.testing.assert_close(text[0], torch.stack(text_logits[:T]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(audio, torch.stack(audio_logits[:T]), rtol=1e-4, atol=1e-5)


def test_loss_only_on_model_streams():
    """The user's codes are inputs only: changing them where they are never an input changes nothing,
    changing a model stream's last target does."""
    lm = load_lm(SMALL)
    codes = _random_codes(SMALL, 2, 12)
    base = moshi_loss(lm, codes, LossWeights()).total
    user_changed = codes.clone()
    user_changed[:, 3, -1] = (user_changed[:, 3, -1] + 1) % SMALL["card"]  # delay 0: never an input
    user_changed[:, 4, -2:] = (user_changed[:, 4, -2:] + 1) % SMALL["card"]  # delay 1: never an input
    assert torch.equal(moshi_loss(lm, user_changed, LossWeights()).total, base)
    model_changed = codes.clone()
    model_changed[:, 1, -1] = (model_changed[:, 1, -1] + 1) % SMALL["card"]
    assert not torch.equal(moshi_loss(lm, model_changed, LossWeights()).total, base)


def test_loss_weights_text_padding_and_first_codebook():
    lm = load_lm(SMALL)
    codes = _random_codes(SMALL, 1, 16)
    codes[0, 0, ::2] = SMALL["existing_text_padding_id"]
    text_logits, audio_logits, targets = teacher_forced_logits(lm, codes)
    ce = torch.nn.functional.cross_entropy(text_logits[0].float(), targets[0, 0], reduction="none")
    w = torch.where(targets[0, 0] == 3, 0.25, 1.0) * (targets[0, 0] != -1)
    w = torch.where(targets[0, 0] == 0, 0.25, w)
    parts = moshi_loss(lm, codes, LossWeights(text_padding_weight=0.25, first_codebook_weight=3.0))
    assert parts.text == pytest.approx(float((ce * w).sum() / w.sum()), rel=1e-5)
    per_cb = parts.audio_per_codebook
    assert parts.audio == pytest.approx((3.0 * per_cb[0] * 16 + per_cb[1] * 15) / (3.0 * 16 + 15), rel=1e-4)


def _train(tmp_path, name, **kw):
    opts = dict(
        config=SMALL, max_steps=6, batch_size=4, seq_len=24, warmup_steps=2, lr=3e-3, log=lambda m: None
    )
    opts.update(kw)
    return train_lm(tmp_path / f"{name}.safetensors", _task_data(), **opts)


def test_loss_falls(tmp_path):
    info = _train(tmp_path, "fall", max_steps=60, heldout=_task_data(4, seed=1), log_every=10)
    hist = info["loss_history"]
    assert hist[-1]["text"] + hist[-1]["audio"] < 0.7 * (hist[0]["text"] + hist[0]["audio"])
    assert info["steps"] == 60 and info["heldout"]["windows"] == 8
    assert info["heldout"]["text_word_accuracy_teacher_forced"] is not None


def test_resume_continues_to_the_same_weights(tmp_path):
    full = _train(tmp_path, "full")
    stopped = _train(tmp_path, "part", stop_after_steps=3)
    assert stopped["stopped_at"] == 3
    resumed = _train(tmp_path, "part")
    assert resumed["steps"] == full["steps"] == 6
    assert resumed["resumed_from"]["step"] == 3
    a = read_safetensors(tmp_path / "full.safetensors")
    b = read_safetensors(tmp_path / "part.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    _train(tmp_path, "a", max_steps=3)
    _train(tmp_path, "b", max_steps=3)
    _train(tmp_path, "c", max_steps=3, seed=1)
    a, b, c = (read_safetensors(tmp_path / f"{n}.safetensors") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_weights_load_as_the_preset_model_and_sidecar_records(tmp_path):
    info = _train(tmp_path, "w", max_steps=2)
    lm = load_lm(SMALL, tmp_path / "w.safetensors")  # strict load: Moshi's keys and shapes
    assert lm.text_card == SMALL["text_card"]
    assert info["data"]["sha256"] == "toy0" and info["recipe"]["loss"]["text_padding_weight"] == 0.5
    side = json.loads((tmp_path / "w.json").read_text())
    assert side["steps"] == 2
    # the code the run started with, beside the commit when the sidecar was written
    assert side["git_commit_at_start"] and side["git_commit_at_start"] == side["git_commit"]


def test_resume_state_of_another_recipe_is_refused(tmp_path):
    _train(tmp_path, "r", stop_after_steps=2)
    with pytest.raises(RecipeMismatchError, match="another recipe"):
        _train(tmp_path, "r", lr=1e-4)
    assert _train(tmp_path, "r", lr=1e-4, fresh=True)["steps"] == 6


def test_token_folder_format(tmp_path):
    grid = _task_data(1).grids[0]
    save_file({"a": grid.to(torch.int16), "b": grid[:, :10].to(torch.int16)}, str(tmp_path / "x.safetensors"))
    data = load_token_folder(tmp_path, 5)
    assert [g.shape[1] for g in data.grids] == [40, 10] and data.grids[0].dtype == torch.long
    with pytest.raises(TrainDataError, match="expected an integer grid"):
        load_token_folder(tmp_path, 17)
    with pytest.raises(TrainDataError, match="no .safetensors"):
        load_token_folder(tmp_path / "missing", 5)
    bad = TokenData([torch.full((5, 8), 99)], "x", "bad")
    with pytest.raises(TrainDataError, match="outside"):
        train_lm(tmp_path / "o.safetensors", bad, config=SMALL, max_steps=1)


def test_user_token_dropout_touches_only_user_inputs():
    from vemi_eval.training.lm import drop_user_tokens

    codes = _random_codes(SMALL, 4, 50)
    before = codes.clone()
    drop_user_tokens(codes, SMALL["dep_q"], 0.3, np.random.default_rng(0))
    assert torch.equal(codes[:, :3], before[:, :3])  # text and model audio: untouched
    share = (codes[:, 3:] == -1).float().mean().item()
    assert 0.2 < share < 0.4 and torch.equal(
        codes[:, 3:][codes[:, 3:] != -1], before[:, 3:][codes[:, 3:] != -1]
    )


def test_weights_are_written_in_half_precision_and_load_as_fp32(tmp_path):
    info = _train(tmp_path, "h", max_steps=1)
    raw = read_safetensors(tmp_path / "h.safetensors")
    assert info["weights_dtype"] == "float16" and raw["text_linear.weight"].dtype == torch.float16
    assert load_lm(SMALL, tmp_path / "h.safetensors").text_linear.weight.dtype == torch.float32


def test_cli_trains_on_a_users_config_and_token_folder(tmp_path, capsys):
    from vemi_eval.cli import main

    (tmp_path / "config.json").write_text(json.dumps(SMALL))
    data = tmp_path / "grids"
    data.mkdir()
    grids = {f"s{i}": g.to(torch.int16) for i, g in enumerate(_task_data(4).grids)}
    save_file(grids, str(data / "part0.safetensors"))
    out = tmp_path / "lm.safetensors"
    args = ["train", "lm", "--config", str(tmp_path / "config.json"), "--data", str(data), "--max-steps", "2"]
    args += ["--out", str(out), "--state", str(tmp_path / "state.safetensors"), "--batch-size", "2"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0 and "2 steps" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["data"]["sequences"] == 4
    load_lm(SMALL, out)
    with pytest.raises(SystemExit) as bad:
        main(
            [
                *args[:4],
                "--data",
                str(tmp_path / "nothing"),
                "--max-steps",
                "1",
                "--out",
                str(tmp_path / "o.safetensors"),
            ]
        )
    assert bad.value.code == 2 and "no .safetensors" in capsys.readouterr().err


def test_held_out_curve_is_written_as_it_comes_kept_over_a_resume_and_changes_no_weight(
    tmp_path, monkeypatch
):
    import itertools

    from vemi_eval.training import loop as loop_module

    # a CPU clock that reads 0, 1, 2, ...: each step costs exactly one "second" (read twice per step)
    clock = itertools.count()
    monkeypatch.setattr(loop_module.time, "process_time", lambda: float(next(clock)))
    held = _task_data(4, seed=1)
    every = dict(heldout=held, heldout_every_s=1e-9)  # an evaluation after every step
    _train(tmp_path, "plain", heldout=held)
    stopped = _train(tmp_path, "curve", stop_after_steps=3, **every)
    assert stopped["stopped_at"] == 3
    progress = json.loads((tmp_path / "curve.progress.json").read_text())
    assert progress["final"] is False and progress["step"] == 3
    assert [p["step"] for p in progress["heldout_curve"]] == [1, 2, 3]
    done = _train(tmp_path, "curve", **every)
    assert [p["step"] for p in done["heldout_curve"]] == [1, 2, 3, 4, 5, 6]
    # the CPU axis runs on over the resume, not from 0, and the sidecar says the whole
    assert [p["cpu_s"] for p in done["heldout_curve"]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert done["train_cpu_s"] == 6.0
    assert 0.0 <= done["heldout_curve"][-1]["text_word_accuracy_teacher_forced"] <= 1.0
    assert not (tmp_path / "curve.progress.json").exists()  # the sidecar holds the curve now
    a = read_safetensors(tmp_path / "plain.safetensors")
    b = read_safetensors(tmp_path / "curve.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

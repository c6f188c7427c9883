"""The LM trainer's recipe options (issue 13: 4.1 distill, 4.3 latency-curriculum, 6.3 noise-aug), each on
tiny data: it changes what it should and nothing else; without options the recipe, batches and weights
are the plain trainer's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from reference_model.checkpoint import read_safetensors
from reference_model.lm import load_lm
from tests.test_training_lm import SMALL, _random_codes, _task_data
from vemi_eval.training.lm import (
    LMTrainRecipe,
    LossWeights,
    crop_plan,
    crops,
    moshi_loss,
    pick_depth_frames,
    sample_batch,
    train_lm,
)
from vemi_eval.training.lm_options import LMOption, OptionContext, OptionError, build_options
from vemi_eval.training.lm_options.curriculum import LatencyCurriculum, stage_at, stage_gaps
from vemi_eval.training.lm_options.distill import Distill, soft_kl


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _ctx(train=None, cfg=SMALL):
    from reference_model.config import load_lm_config

    return OptionContext(load_lm_config(cfg), train or _task_data(), None, "cpu", 0, lambda m: None)


def _save_lm(tmp_path, name, seed, cfg=SMALL):
    torch.manual_seed(seed)
    lm = load_lm(cfg, "random")
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in lm.state_dict().items()}, str(path))
    (tmp_path / f"{name}.config.json").write_text(json.dumps(cfg))
    return lm, path


def _folder(tmp_path, name, grids):
    d = tmp_path / name
    d.mkdir()
    save_file({f"s{i:03d}": g.to(torch.int16) for i, g in enumerate(grids)}, str(d / "x.safetensors"))
    return str(d)


# --- without options: the plain trainer ----------------------------------------------------------
def test_plain_recipe_digest_is_the_shipped_lms():
    """The options/init_from fields are absent from a plain recipe's digest: the shipped LM's sidecar
    digest (written before options existed) is reproduced from its recorded recipe."""
    from reference_model.lm.load import WEIGHTS_DIR

    side = json.loads((WEIGHTS_DIR / "tiny_lm.json").read_text())
    rec = dict(side["recipe"])
    rec["loss"] = LossWeights(**rec["loss"])
    rec["betas"] = tuple(rec["betas"])
    assert LMTrainRecipe(**rec).digest() == side["recipe_digest"]


def test_batches_are_the_plain_samplers():
    grids = _task_data().grids
    a = sample_batch(grids, np.random.default_rng(3), 4, 24)
    rng = np.random.default_rng(3)
    b = crops(grids, crop_plan(grids, rng, 4, 24), 24)
    assert torch.equal(a, b)


@dataclass
class _NoOp(LMOption):
    name: ClassVar[str] = "noop"


def test_an_option_whose_hooks_change_nothing_trains_the_same_weights(tmp_path):
    kw = dict(config=SMALL, max_steps=3, batch_size=4, seq_len=24, warmup_steps=2, log=lambda m: None)
    plain = train_lm(tmp_path / "a.safetensors", _task_data(), **kw)
    train_lm(tmp_path / "b.safetensors", _task_data(), options=[_NoOp()], **kw)
    a, b = read_safetensors(tmp_path / "a.safetensors"), read_safetensors(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert plain["trained_with"] == [] and "options" not in plain["recipe"] or not plain["recipe"]["options"]
    side_b = json.loads((tmp_path / "b.json").read_text())
    assert side_b["trained_with"] == ["noop"] and side_b["recipe_digest"] != plain["recipe_digest"]


def test_unknown_option_and_bad_arguments_are_one_line_errors():
    with pytest.raises(OptionError, match="unknown LM recipe option 'nope'"):
        build_options(["nope"])
    with pytest.raises(OptionError, match="needs --teacher"):
        build_options(["distill"])
    with pytest.raises(OptionError, match="has no argument 'warp'"):
        build_options(["latency-curriculum"], {"latency-curriculum": {"warp": "1"}})
    with pytest.raises(OptionError, match="expected a number"):
        build_options(["latency-curriculum"], {"latency-curriculum": {"stages": "many"}})
    with pytest.raises(OptionError, match="must be >= target_gap_s"):
        build_options(["latency-curriculum"], {"latency-curriculum": {"start_gap_s": "0.1"}})
    with pytest.raises(OptionError, match="augments the plain training grids"):
        build_options(["latency-curriculum", "noise-aug"])


def test_cli_unknown_option_exits_2(tmp_path, capsys):
    from vemi_eval.cli import main

    with pytest.raises(SystemExit) as done:
        main(["train", "lm", "--option", "nope", "--steps", "1", "--out", str(tmp_path / "x.safetensors")])
    assert done.value.code == 2 and "unknown LM recipe option 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["train", "lm", "--teacher", "t.safetensors", "--out", str(tmp_path / "x.safetensors")])
    assert done.value.code == 2


# --- 4.1 distillation -----------------------------------------------------------------------------
def _distill_parts(tmp_path, teacher_seed, alpha=0.5):
    student, _ = _save_lm(tmp_path, "student", 0)
    _, tpath = _save_lm(tmp_path, f"teacher{teacher_seed}", teacher_seed)
    d = build_options(
        ["distill"],
        {"distill": {"alpha": str(alpha)}},
        {"teacher": f"{tpath}:{tmp_path}/student.config.json"},
    )[0]
    d.seed(0)
    d.setup(_ctx())
    student.train().requires_grad_(True)
    codes = _random_codes(SMALL, 2, 20)
    frames = pick_depth_frames(codes, 0.5, np.random.default_rng(0))
    hard = moshi_loss(student, codes, LossWeights(), frames)
    hard_total = float(hard.total.detach())
    return d, d.loss(student, codes, frames, hard), hard_total


def test_kl_is_zero_when_the_student_is_the_teacher(tmp_path):
    d, parts, hard = _distill_parts(tmp_path, teacher_seed=0)
    kl_text, kl_audio = d.soft[-1]
    assert abs(kl_text) < 1e-6 and abs(kl_audio) < 1e-6
    assert float(parts.total.detach()) == pytest.approx(0.5 * hard, rel=1e-6)


def test_kl_pulls_the_student_toward_another_teacher(tmp_path):
    d, parts, hard = _distill_parts(tmp_path, teacher_seed=1, alpha=1.0)
    kl_text, kl_audio = d.soft[-1]
    assert kl_text > 1e-3 and kl_audio > 1e-3
    assert float(parts.total.detach()) == pytest.approx(d.temperature**2 * (kl_text + kl_audio), rel=1e-5)
    parts.total.backward()  # the soft term has gradients into the student only
    assert all(p.grad is None for p in d.model.parameters())
    assert parts.text_logits is not None


def test_soft_kl_is_the_tempered_kl():
    s, t = torch.randn(3, 7), torch.randn(3, 7)
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(s / 2, -1), torch.log_softmax(t / 2, -1), log_target=True, reduction="none"
    ).sum(-1)
    assert torch.allclose(soft_kl(s, t, 2.0), ref, atol=1e-6)


def test_teacher_of_other_token_spaces_is_refused(tmp_path):
    other = dict(SMALL, card=24)
    _, tpath = _save_lm(tmp_path, "big", 0, other)
    d = Distill(teacher=f"{tpath}:{tmp_path}/big.config.json")
    d.seed(0)
    with pytest.raises(OptionError, match="card"):
        d.setup(_ctx())


def test_distill_trains_a_smaller_student_and_records_the_teacher(tmp_path):
    _, tpath = _save_lm(tmp_path, "t", 3)
    student_cfg = dict(SMALL, dim=16, depformer_dim=16, depformer_dim_feedforward=32)
    teacher = f"{tpath}:{tmp_path}/t.config.json"
    info = train_lm(
        tmp_path / "s.safetensors", _task_data(), config=student_cfg, max_steps=2, batch_size=2, seq_len=16,
        log=lambda m: None, options=build_options(["distill"], None, {"teacher": teacher}),
    )  # fmt: skip
    assert info["trained_with"] == ["distill"]
    assert info["options"]["distill"]["teacher_parameters"] > info["parameters"]
    assert info["recipe"]["options"][0]["teacher_sha256"] == info["options"]["distill"]["teacher_sha256"]


# --- 4.3 latency curriculum ---------------------------------------------------------------------------
def test_gap_schedule_is_monotone_and_ends_at_the_target():
    for start, target, n in [(0.96, 0.32, 3), (0.5, 0.32, 5), (0.32, 0.32, 2), (0.8, 0.2, 1)]:
        gaps = stage_gaps(start, target, n)
        assert len(gaps) == n and gaps[-1] == pytest.approx(target)
        assert all(a >= b for a, b in zip(gaps, gaps[1:]))
        if n > 1:
            assert gaps[0] == pytest.approx(start)
    # the default schedule: the last stage is the corpus's own gap, so it reuses its cached tokens
    from vemi_eval.data import dialogue

    assert stage_gaps(0.96, 0.32, 3) == [0.96, 0.64, 0.32]
    assert dialogue.gap_suffix(0.96 - 0.64) == "" and dialogue.gap_suffix(0.64) == "-gap640ms"
    stages = [stage_at(p, 3) for p in np.linspace(0, 1, 31)]
    assert stages[0] == 0 and stages[-1] == 2 and stages == sorted(stages)


def test_curriculum_samples_each_stages_data_in_turn(tmp_path):
    sets = [[g + 0 for g in _task_data(4, seed=s).grids] for s in (10, 11, 12)]
    folders = [_folder(tmp_path, f"stage{k}", grids) for k, grids in enumerate(sets)]
    c = LatencyCurriculum(stages=3, stage_data=tuple(folders))
    c.seed(0)
    c.setup(_ctx())
    for progress, k in [(0.0, 0), (0.34, 1), (0.99, 2), (1.0, 2)]:
        got = c.grids(0, progress, _task_data().grids)
        assert all(torch.equal(a, b) for a, b in zip(got, sets[k]))
    assert c.report()["gaps_s"][-1] == pytest.approx(0.32)


# --- 6.3 noise augmentation ------------------------------------------------------------------------
def _noise_aug(tmp_path, p):
    train = _task_data(6)
    noisy = [g.clone() for g in train.grids]
    for g in noisy:
        g[3:] = (g[3:] + 7) % 20  # every user code differs from the clean one
    folder = _folder(tmp_path, f"aug{p}", noisy)
    aug = build_options(["noise-aug"], {"noise-aug": {"p": str(p), "copies": "1", "copy_data": folder}})[0]
    aug.seed(0)
    aug.setup(_ctx(train))
    return aug, train, noisy


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_noise_augmentation_touches_only_the_user_channel(tmp_path, p):
    aug, train, noisy = _noise_aug(tmp_path, p)
    plan = crop_plan(train.grids, np.random.default_rng(1), 16, 24)
    batch = crops(train.grids, plan, 24)
    before = batch.clone()
    out = aug.transform(batch, plan, train.grids)
    assert torch.equal(out[:, :3], before[:, :3])  # text and the model's audio: untouched
    changed = [not torch.equal(out[b, 3:], before[b, 3:]) for b in range(16)]
    for b, (i, start) in enumerate(plan):
        if changed[b]:  # the augmented copy of the same session at the same crop
            n = min(24, noisy[i].shape[1] - start)
            assert torch.equal(out[b, 3:, :n], noisy[i][3:, start : start + n])
    assert sum(changed) == {0.0: 0, 1.0: 16}.get(p, sum(changed))
    if p == 0.5:
        assert 0 < sum(changed) < 16


def test_noise_aug_refuses_grids_it_does_not_know(tmp_path):
    aug, train, _ = _noise_aug(tmp_path, 1.0)
    other = _task_data(6, seed=5).grids
    with pytest.raises(OptionError, match="plain training grids"):
        aug.transform(crops(other, [(0, 0)], 8), [(0, 0)], other)


def test_noise_aug_conditions_are_fixed_by_the_recipe_not_the_seed():
    from vemi_eval.training.lm_options.noise_aug import NoiseAugmentation

    @dataclass
    class S:
        seed: int

    a, b = NoiseAugmentation(), NoiseAugmentation()
    a.seed(0)
    b.seed(1)
    conds = [a.conditions(0)(S(k)) for k in range(40)]
    assert conds == [b.conditions(0)(S(k)) for k in range(40)]
    assert {c.kind for c in conds} == {"white", "babble", "reverb"}
    assert all(0 <= c.snr_db <= 20 for c in conds if c.kind != "reverb")
    assert all(0.3 <= c.rt60_s <= 1.0 for c in conds if c.kind == "reverb")
    assert conds != [a.conditions(1)(S(k)) for k in range(40)]  # the second copy draws others


def test_cli_steps_init_from_and_options_reach_the_sidecar(tmp_path, capsys):
    from vemi_eval.cli import main

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(SMALL))
    train = _task_data(4)
    data = _folder(tmp_path, "grids", train.grids)
    noisy = [g.clone() for g in train.grids]
    for g in noisy:
        g[3:] = (g[3:] + 1) % 20
    aug = _folder(tmp_path, "aug", noisy)
    _, init = _save_lm(tmp_path, "init", 5)
    out = tmp_path / "run" / "lm.safetensors"
    args = ["train", "lm", "--config", str(cfg), "--data", data, "--steps", "2", "--batch-size", "2"]
    args += ["--seq-len", "16", "--init-from", str(init), "--out", str(out), "--option", "noise-aug"]
    args += ["--option-arg", f"noise-aug.copy_data={aug}", "--option-arg", "noise-aug.copies=1"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0, capsys.readouterr().err
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["trained_with"] == ["noise-aug"] and side["steps"] == 2
    assert (
        side["recipe"]["init_from"]["path"] == str(init) and len(side["recipe"]["init_from"]["sha256"]) == 64
    )
    assert side["recipe"]["options"][0]["name"] == "noise-aug" and side["recipe"]["options"][0]["copies"] == 1
    assert (out.parent / "lm.state.safetensors").is_file()  # the state lives beside --out
    plain = [*args[: args.index("--option")], "--overwrite"]  # finished weights: replaced only when asked
    with pytest.raises(SystemExit) as again:  # the state beside --out holds a run with the option
        main(plain)
    assert again.value.code == 2 and "another recipe" in capsys.readouterr().err


def test_the_7b_teacher_and_its_2b_student_presets_share_token_spaces():
    from reference_model.config import PRESETS_DIR, load_lm_config
    from vemi_eval.training.lm_options.distill import check_token_spaces

    teacher = load_lm_config("moshi-7b")
    student = load_lm_config(PRESETS_DIR / "moshi-2b-student.json")
    check_token_spaces(teacher, student)
    assert student.dim < teacher.dim and student.num_layers < teacher.num_layers
    with pytest.raises(OptionError, match="text_card"):
        check_token_spaces(teacher, load_lm_config("moshi-2b"))
    check_token_spaces(load_lm_config("tiny"), load_lm_config(PRESETS_DIR / "tiny_lm_student.json"))

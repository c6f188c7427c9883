"""Recipe option dpo (4.2): the loss is log 2 at the reference and falls as the chosen sample's
log-probability rises; sampled conversations are teacher-forceable exactly; the automatic reward scores
what it says (correct answer, latency, a word in the pause)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reference_model.lm import Streamer, load_lm
from tests.test_training_lm import SMALL, _task_data
from vemi_eval.training.lm import teacher_forced_logits, train_lm
from vemi_eval.training.lm_options import dpo


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_dpo_loss_is_log2_at_the_reference_and_falls_with_the_chosen_logp():
    ref_w, ref_l = torch.tensor([-10.0, -3.0]), torch.tensor([-8.0, -4.0])
    assert float(dpo.dpo_loss(ref_w, ref_l, ref_w, ref_l, 0.1)) == pytest.approx(math.log(2))
    higher = float(dpo.dpo_loss(ref_w + 1.0, ref_l, ref_w, ref_l, 0.1))
    lower_rejected = float(dpo.dpo_loss(ref_w, ref_l - 1.0, ref_w, ref_l, 0.1))
    assert higher < math.log(2) and lower_rejected < math.log(2)
    assert float(dpo.dpo_loss(ref_w - 1.0, ref_l, ref_w, ref_l, 0.1)) > math.log(2)


def test_sequence_logp_sums_the_model_streams_log_probs():
    torch.manual_seed(0)
    lm = load_lm(SMALL)
    codes = _task_data(2).grids[0][None, :, :12]
    total, text, audio = dpo.sequence_logp(lm, codes)
    tl, al, targets = teacher_forced_logits(lm, codes)
    want_text = torch.log_softmax(tl[0], -1).gather(-1, targets[0, 0, :, None])[:, 0].sum()  # text delay 0
    assert float(text[0]) == pytest.approx(float(want_text), rel=1e-5)
    assert float(total[0]) == pytest.approx(float(text[0] + audio[0]), rel=1e-6)
    user_changed = codes.clone()
    user_changed[0, 3, -1] += 1  # the user's last frame is never an input: nothing changes
    assert torch.equal(dpo.sequence_logp(lm, user_changed)[0], total)


def test_sampled_conversations_teacher_force_to_the_streamers_logits():
    torch.manual_seed(1)
    lm = load_lm(SMALL)
    user = torch.randint(0, SMALL["card"], (1, 2, 7))
    grid = dpo.sample_conversations(lm, user, 2, 0.8, 1.0, seed=3)
    assert grid.shape == (2, 5, 7) and torch.equal(grid[:, 3:], user.expand(2, 2, 7))
    # replay item 0 greedily through the streamer with the same seed: the same tokens come out
    torch.manual_seed(3)
    s = Streamer(lm, temp=0.8, temp_text=1.0, batch_size=2)
    fed = user.repeat_interleave(2, dim=0)
    outs = []
    for step in range(7 + 1 + lm.max_delay):
        frame = fed[:, :, step - 1 : step] if 1 <= step <= 7 else torch.full((2, 2, 1), -1)
        out = s.step(frame)
        if out is not None and len(outs) < 7:
            outs.append(out[:, :, 0])
    assert torch.equal(torch.stack(outs, 2), grid[:, :3])
    # and the grid's teacher-forced log-probs are finite and differ between the two samples
    logp = dpo.sequence_logp(lm, grid)[0]
    assert torch.isfinite(logp).all() and not torch.equal(grid[0], grid[1])


def _pairs_option(lm, n=6, T=16, seed=0) -> dpo.Dpo:
    """A dpo option with pairs made by hand (no corpus): chosen = the toy task's grids, rejected = the
    same grids with the model's text stream shuffled."""
    opt = dpo.Dpo(pair_batch=3)
    opt.seed(seed)
    grids = torch.stack([g[:, :T] for g in _task_data(n, T=T).grids])
    rejected = grids.clone()
    rejected[:, 0] = rejected[:, 0, torch.randperm(T, generator=torch.Generator().manual_seed(1))]
    opt.reference = lm
    opt.pairs = opt._with_reference(grids, rejected)
    opt.steps = []
    return opt


def test_training_on_pairs_starts_at_log2_and_raises_the_chosen_margin(tmp_path):
    torch.manual_seed(0)
    start = load_lm(SMALL)
    path = tmp_path / "start.safetensors"
    from reference_model.checkpoint import save

    save(start, path)
    opt = _pairs_option(load_lm(SMALL, path))
    info = train_lm(
        tmp_path / "dpo.safetensors", _task_data(), config=SMALL, max_steps=12, batch_size=2, seq_len=16,
        warmup_steps=1, lr=3e-3, log=lambda m: None, options=[opt], init_from=path,
    )  # fmt: skip
    rep = info["options"]["dpo"]
    assert info["trained_with"] == ["dpo"]
    assert rep["dpo_loss_first"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 0
    assert rep["dpo_loss_last10"] < rep["dpo_loss_first"]
    trained = load_lm(SMALL, tmp_path / "dpo.safetensors")
    with torch.no_grad():
        before = opt.pairs.ref_chosen - opt.pairs.ref_rejected
        after = (
            dpo.sequence_logp(trained, opt.pairs.chosen)[0]
            - dpo.sequence_logp(trained, opt.pairs.rejected)[0]
        )
    assert float((after - before).mean()) > 0


def test_dpo_needs_a_warm_start():
    from vemi_eval.training.lm_options import OptionContext, OptionError

    opt = dpo.Dpo()
    opt.seed(0)
    with pytest.raises(OptionError, match="init-from"):
        opt.setup(OptionContext(None, None, None, "cpu", 0))  # type: ignore[arg-type]


# --- the automatic reward ----------------------------------------------------------------------------------
def _session():
    from vemi_eval.data import dialogue as dlg

    fs = dlg.FRAME_SIZE
    w = lambda text, a, b: dlg.Word(text, a * fs, b * fs)  # noqa: E731
    t1 = dlg.Turn(
        "what comes after {n}", 7, (w("what", 2, 4), w("seven", 10, 12)), (4 * fs, 9 * fs), w("eight", 16, 20)
    )
    t2 = dlg.Turn("what comes after {n}", 2, (w("what", 40, 42), w("two", 43, 45)), None, w("three", 49, 53))
    voice = dlg.UserVoice("v-0", "v", "en-us", 50, 150)
    return dlg.Session("train-00000", "train", voice, (t1, t2), 90 * fs, 0.0, None, 0, None)  # type: ignore[arg-type]


def test_reward_scores_correctness_latency_and_the_pause():
    from vemi_eval.data import dialogue as dlg
    from vemi_eval.measurements import preference as pref

    v, sr, fs = dlg.vocab(), dlg.SAMPLE_RATE, dlg.FRAME_SIZE
    sess = _session()
    weights = pref.RewardWeights(speaker=0.0)

    def tokens(words: dict[int, str]) -> list[int | None]:
        out = [v.pad_id] * 90
        for f, word in words.items():
            out[f] = v.id(word)
        return out

    perfect = pref.reward(sess, tokens({16: "eight", 49: "three"}), fs, sr, weights)
    assert perfect.turns == 2 and perfect.correct == 1.0 and perfect.latency == pytest.approx(1.0)
    assert perfect.total == pytest.approx(0.9)
    wrong = pref.reward(sess, tokens({16: "nine", 49: "three"}), fs, sr, weights)
    assert wrong.correct == 0.5 and wrong.latency == pytest.approx(1.0)
    late = pref.reward(sess, tokens({26: "eight", 49: "three"}), fs, sr, weights)
    assert late.correct == 1.0 and late.latency == pytest.approx(
        (math.exp(-0.8 / pref.LATENCY_SCALE_S) + 1) / 2
    )
    in_pause = pref.reward(sess, tokens({6: "four", 16: "eight", 49: "three"}), fs, sr, weights)
    assert in_pause.correct == 0.5  # the right word, but the model spoke during the pause
    silent = pref.reward(sess, tokens({}), fs, sr, weights)
    assert silent.total == 0.0 and silent.turns == 2
    cropped = pref.reward(sess, tokens({16: "eight"})[:30], fs, sr, weights)
    assert cropped.turns == 1  # the second turn's window lies past the frames
    assert np.isclose(
        pref.reward(sess, tokens({16: "eight", 49: "three"}), fs, sr, pref.RewardWeights(), 0.5).total, 0.95
    )

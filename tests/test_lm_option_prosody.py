"""Recipe option prosody-cond (6.1): zero features leave the model's logits exactly as they are; a copy
changes only the model's audio streams of the items it is applied to; the projection ships beside the
plain LM; the measurement's F0 reads a pitch shift in semitones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_model.lm import load_lm
from tests.test_training_lm import SMALL, _random_codes, _task_data
from vemi_eval.training.lm import teacher_forced_logits, train_lm
from vemi_eval.training.lm_options import prosody


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_zero_features_leave_logits_identical_and_a_request_changes_them():
    torch.manual_seed(0)
    lm = load_lm(SMALL)
    cond = prosody.ProsodyConditioning(SMALL["dim"])
    torch.nn.init.normal_(cond.proj.weight, std=0.5)  # a trained projection
    codes = _random_codes(SMALL, 2, 10)
    with torch.no_grad():
        plain = teacher_forced_logits(lm, codes)
        zero = teacher_forced_logits(lm, codes, input_offset=cond(torch.zeros(2, 2)))
        asked = teacher_forced_logits(lm, codes, input_offset=cond(torch.tensor([[0.75, 0.0], [0.0, 0.0]])))
    assert all(torch.equal(a, b) for a, b in zip(plain, zero))
    assert not torch.allclose(asked[0][0], plain[0][0]) and torch.equal(asked[0][1], plain[0][1])


def _option(n_grids: int, T: int, p: float = 1.0) -> prosody.ProsodyCond:
    """The option with hand-made copies (no corpus): copy of grid i = its model audio + 1."""
    opt = prosody.ProsodyCond(p=p)
    opt.seed(0)
    opt.ids = [f"s{i}" for i in range(n_grids)]
    opt.dep_q = SMALL["dep_q"]
    opt.styles = {sid: (2 * (i + 1), 3.0) for i, sid in enumerate(opt.ids)}
    opt.cond = prosody.ProsodyConditioning(SMALL["dim"], opt.lr_scale)
    opt._feats, opt.styled_items, opt.out_path = None, 0, None
    return opt


def test_a_copy_replaces_only_the_model_audio_streams():
    grids = _task_data(3, T=20).grids
    opt = _option(3, 20)
    opt.copies = {f"s{i}": (g[1:3] + 1).to(torch.int16) for i, g in enumerate(grids)}
    plan = [(0, 0), (2, 5)]
    batch = torch.stack([grids[0][:, :12], grids[2][:, 5:17]])
    out = opt.transform(batch.clone(), plan, grids)
    assert torch.equal(out[:, 0], batch[:, 0]) and torch.equal(out[:, 3:], batch[:, 3:])  # text, user
    assert torch.equal(out[:, 1:3], batch[:, 1:3] + 1)
    assert torch.allclose(opt._feats, torch.tensor([[0.5, 0.5], [1.5, 0.5]]))
    none = _option(3, 20, p=0.0)
    none.copies = opt.copies
    assert torch.equal(none.transform(batch.clone(), plan, grids), batch) and not none._feats.any()


def test_training_ships_the_plain_lm_and_the_projection_beside_it(tmp_path):
    grids = _task_data().grids
    opt = _option(len(grids), 40)
    opt.copies = {f"s{i}": ((g[1:3] + 1) % SMALL["card"]).to(torch.int16) for i, g in enumerate(grids)}
    opt.setup = lambda ctx: setattr(opt, "out_path", ctx.out_path)  # the copies are made above
    out = tmp_path / "p.safetensors"
    info = train_lm(out, _task_data(), config=SMALL, max_steps=4, batch_size=4, seq_len=24, warmup_steps=1,
                    lr=3e-3, log=lambda m: None, options=[opt])  # fmt: skip
    assert info["trained_with"] == ["prosody-cond"] and info["options"]["prosody-cond"]["styled_items"] == 16
    load_lm(SMALL, out)  # strict: the plain model's keys
    W = prosody.load_projection(out)
    assert W is not None and W.shape == (SMALL["dim"], 2) and float(W.norm()) > 0
    f = torch.tensor([[0.5, -0.25]])
    torch.testing.assert_close(f @ W.T, opt.cond(f)[:, 0].detach())  # shipped with the scale folded in
    assert prosody.load_projection(tmp_path / "none.safetensors") is None


def test_session_style_is_a_function_of_the_session():
    assert prosody.session_style("train-00001") == prosody.session_style("train-00001")
    styles = {prosody.session_style(f"train-{i:05d}") for i in range(40)}
    assert len({st for st, _ in styles}) > 3 and all(st != 0 and -4 <= st <= 4 for st, _ in styles)


def test_median_f0_reads_a_pitch_shift_in_semitones():
    pytest.importorskip("librosa")
    from vemi_eval.measurements.prosody import median_f0

    sr = 24000
    t = np.arange(sr) / sr
    tone = lambda f: (0.3 * np.sign(np.sin(2 * np.pi * f * t)) * np.hanning(t.size)).astype(np.float32)  # noqa: E731
    base, up = median_f0(tone(120.0), sr), median_f0(tone(120.0 * 2 ** (3 / 12)), sr)
    assert base == pytest.approx(120.0, rel=0.02)
    assert 12 * np.log2(up / base) == pytest.approx(3.0, abs=0.15)

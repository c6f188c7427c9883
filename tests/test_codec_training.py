"""Training mechanics of the codec: EMA codebooks, k-means init, dead-code re-init, straight-through grads."""

from __future__ import annotations

import torch

from reference_model.codec import MimiCodec, codec_config
from reference_model.codec.quantizer import EuclideanCodebook, ResidualVectorQuantizer
from reference_model.pairing import tokenizer_sha256
from vemi_eval.errors import OptionsError
from vemi_eval.training.codec import codec_schedule
from vemi_eval.training.codec_losses import MultiScaleMelLoss
from vemi_eval.training.codec_recipes import CodecRecipe
from vemi_eval.training.state import RecipeMismatchError


def _lr_at(base: float, step: int, frac: float, warmup: int) -> float:
    return codec_schedule(CodecRecipe(lr=base, warmup_steps=warmup)).lr(step, frac)


def test_kmeans_and_ema_track_the_data():
    torch.manual_seed(0)
    centers = torch.randn(4, 8) * 5
    data = centers[torch.randint(0, 4, (512,))] + 0.01 * torch.randn(512, 8)
    cb = EuclideanCodebook(8, 4, decay=0.5)
    cb.kmeans_init(data)
    for _ in range(10):
        cb.ema_update(data, cb.encode(data), replace_dead=False)
    # every centre has a centroid next to it
    dist = torch.cdist(centers, cb.embedding).min(dim=1).values
    assert dist.max() < 0.1
    assert torch.equal(cb.encode(cb.embedding), torch.arange(4))


def test_dead_codes_are_moved_onto_the_data():
    torch.manual_seed(0)
    cb = EuclideanCodebook(4, 16, decay=0.1)
    cb.embedding_sum.fill_(-100.0)  # all centroids far away, code 0 the least so
    cb.embedding_sum[0] = 1.0
    cb._clear_cache()
    data = torch.randn(256, 4) + 1.0
    assert set(cb.encode(data).tolist()) == {0}
    replaced = cb.ema_update(data, cb.encode(data), replace_dead=True)
    assert replaced > 0.5
    assert len(set(cb.encode(data).tolist())) > 4


def test_rvq_training_pass_gives_straight_through_gradient_and_commitment():
    torch.manual_seed(0)
    # fewer bins than vectors, so k-means cannot give every vector its own centroid
    rvq = ResidualVectorQuantizer(dimension=8, input_dimension=16, output_dimension=16, n_q=4, bins=8)
    for vq in rvq.vq.layers:
        vq._codebook._initialized.fill_(0.0)
    rvq.train()
    x = torch.randn(2, 16, 40, requires_grad=True)
    out, codes, commit = rvq(x, n_q=3)
    assert codes.shape == (2, 3, 40) and commit > 0
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(bool(vq._codebook._initialized.item()) for vq in rvq.vq.layers[:3])
    assert not bool(rvq.vq.layers[3]._codebook._initialized.item())  # never reached with n_q=3


def test_codec_training_step_lowers_the_loss():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    codec = MimiCodec(codec_config("tiny"))
    codec.train()
    mel = MultiScaleMelLoss(24000)
    opt = torch.optim.AdamW(codec.parameters(), lr=1e-3)
    t = torch.arange(1920 * 2) / 24000
    x = (0.1 * torch.sin(2 * torch.pi * 220 * t)).view(1, 1, -1).repeat(2, 1, 1)
    losses = []
    for _ in range(6):
        y, _, commit = codec(x, 8, torch.tensor([False, True]))
        loss = mel(y, x) + 10 * (y - x).abs().mean() + commit
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_lr_schedule_warms_up_then_anneals():
    assert _lr_at(1e-3, 0, 0.0, 10) < _lr_at(1e-3, 9, 0.0, 10) == 1e-3
    assert _lr_at(1e-3, 100, 0.5, 10) < 1e-3
    assert abs(_lr_at(1e-3, 100, 1.0, 10) - 5e-5) < 1e-12


# --- recipe 2: weight norm, resume, determinism --------------------------------------------------
class _FakeAudio:
    """A few seconds of harmonic 'speech' so trainer tests need no corpus."""

    def __init__(self, batch_size: int) -> None:
        import numpy as np

        from vemi_eval.training.codec_audio import TrainingAudio
        from vemi_eval.training.codec_recipes import CodecRecipe

        t = np.arange(24000 * 3) / 24000
        wave = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 900), 1))
        pcm = (wave * 0.1 * 32767 / 2).astype(np.int16)
        self.inner = TrainingAudio.__new__(TrainingAudio)
        self.inner.audio = np.concatenate([pcm, pcm[::-1]])
        self.inner.offsets = np.array([0, pcm.size, 2 * pcm.size])
        self.inner.summary = {"corpus": "fake"}
        self.inner.recipe = CodecRecipe(
            batch_size=batch_size, segment_frames=2, warmup_steps=2, weight_norm=True
        )
        self.recipe = self.inner.recipe


class _Killed(Exception):
    pass


def _train(tmp_path, name: str, steps: int, fresh: bool = False, kill_at: int | None = None):
    """``kill_at``: die (like a SIGKILL, nothing written afterwards) when step ``kill_at`` is logged."""
    from vemi_eval.training.codec import train_codec

    def log(msg: str) -> None:
        if kill_at is not None and msg.startswith(f"step {kill_at} "):
            raise _Killed

    fake = _FakeAudio(batch_size=2)
    out = tmp_path / f"{name}.safetensors"
    info = train_codec(out, minutes=1, recipe=fake.recipe, max_steps=steps, evaluate=False, audio=fake.inner,
                       log=log, fresh=fresh, log_every=1, checkpoint_every_s=0.0)  # fmt: skip
    return out, info


def test_weight_norm_folds_to_the_same_function():
    from vemi_eval.training.codec_model import add_weight_norm, plain_copy

    torch.manual_seed(0)
    codec = MimiCodec(codec_config("tiny")).eval()
    x = torch.randn(1, 1, 1920 * 2) * 0.1
    with torch.no_grad():
        ref = codec.decode(codec.encode(x))
        add_weight_norm(codec)
        assert any(".parametrizations.weight." in k for k in codec.state_dict())
        plain = plain_copy(codec).eval()
        assert not any("parametrizations" in k for k in plain.state_dict())
        assert set(plain.state_dict()) == set(MimiCodec(codec_config("tiny")).state_dict())
        torch.testing.assert_close(plain.decode(plain.encode(x)), ref, atol=1e-5, rtol=1e-4)
        plain_copy(codec)  # a second fold must not break the parametrized original
        torch.testing.assert_close(codec.decode(codec.encode(x)), ref, atol=1e-5, rtol=1e-4)


def test_resume_continues_exactly_and_same_seed_same_weights(tmp_path):
    from safetensors.torch import load_file

    straight, info = _train(tmp_path, "straight", 4)
    assert info["steps"] == 4 and info["trained"] and info["recipe"]["weight_norm"]
    again, _ = _train(tmp_path, "again", 4)
    import pytest

    with pytest.raises(_Killed):  # killed after the checkpoint of step 2, before that of step 3
        _train(tmp_path, "killed", 4, kill_at=3)
    resumed, info2 = _train(tmp_path, "killed", 4)
    assert info2["steps"] == 4
    a, b, c = load_file(str(straight)), load_file(str(again)), load_file(str(resumed))
    assert set(a) == set(c)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
        torch.testing.assert_close(a[k], c[k], atol=0, rtol=0)
    fresh, info3 = _train(tmp_path, "killed", 1, fresh=True)
    assert info3["steps"] == 1


def test_resume_refuses_another_recipe(tmp_path):
    import pytest

    from vemi_eval.training.codec import train_codec
    from vemi_eval.training.codec_recipes import CodecRecipe

    out, _ = _train(tmp_path, "r", 1)
    fake = _FakeAudio(batch_size=2)
    with pytest.raises(RecipeMismatchError, match="another recipe"):
        train_codec(out, minutes=1, recipe=CodecRecipe(batch_size=2, segment_frames=2, lr=1e-5), max_steps=2,
                    evaluate=False, audio=fake.inner, log=lambda *_: None)  # fmt: skip


def test_dac_mel_loss_is_zero_on_identity_and_grows_with_distortion():
    mel = MultiScaleMelLoss(24000, kind="dac-log10", scales=((64, 10), (256, 40)))
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4800) * 0.1
    assert mel(x, x).item() == 0.0
    assert 0 < mel(x * 0.9, x).item() < mel(x * 0.5, x).item()


def test_decoder_only_recipe_keeps_every_code_and_trains_the_decoder(tmp_path):
    import dataclasses

    import pytest
    from safetensors.torch import load_file

    from reference_model.checkpoint import load_into
    from vemi_eval.training.codec import train_codec
    from vemi_eval.training.codec_model import ENCODER_SIDE, codes_digest
    from vemi_eval.training.codec_recipes import named_recipes
    from vemi_eval.training.state import write_weights

    torch.manual_seed(0)
    start = tmp_path / "start.safetensors"
    write_weights(start, MimiCodec(codec_config("tiny")).state_dict(), {"preset": "tiny"})
    fake = _FakeAudio(batch_size=2)
    recipe = dataclasses.replace(
        named_recipes()["v1-decoder"], batch_size=2, segment_frames=2, warmup_steps=1
    )
    with pytest.raises(OptionsError, match="--init-from"):
        train_codec(tmp_path / "x.safetensors", minutes=1, recipe=recipe, max_steps=1, evaluate=False,
                    audio=fake.inner, log=lambda *_: None)  # fmt: skip
    losses: list[float] = []

    def log(msg: str) -> None:
        if msg.startswith("step "):
            losses.append(float(msg.split("mel=")[1].split()[0]) + float(msg.split("level=")[1].split()[0]))

    out = tmp_path / "dec.safetensors"
    info = train_codec(out, minutes=1, recipe=recipe, max_steps=12, evaluate=False, audio=fake.inner,
                       init_from=start, log=log, log_every=4)  # fmt: skip
    assert {"encoder", "encoder_transformer", "quantizer"} <= set(info["frozen"]) <= set(ENCODER_SIDE)
    assert info["codes_digest"] == info["codes_digest_at_start"]
    assert losses[-1] < losses[0]
    before, after = load_file(str(start)), load_file(str(out))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("decoder", "upsample")) for k in changed), sorted(changed)[:5]
    # the same codes from the same audio, whatever the decoder became
    a, b = MimiCodec(codec_config("tiny")), MimiCodec(codec_config("tiny"))
    load_into(a, start)
    load_into(b, out)
    audio = [fake.inner.audio[:4800].astype("float32") / 32767]
    assert codes_digest(a, audio) == codes_digest(b, audio)


def test_frame_level_loss_sees_a_quiet_output():
    from vemi_eval.training.codec_losses import frame_level_loss

    x = torch.randn(2, 1, 4800) * 0.1
    assert frame_level_loss(x, x).item() == 0.0
    quiet = frame_level_loss(x * 10 ** (-5 / 20), x).item()  # 5 dB low: 0.5 in log10 energy per frame
    assert abs(quiet - 0.5) < 1e-4


def test_adversarial_decoder_recipe_resumes_exactly_with_its_discriminator(tmp_path):
    import dataclasses

    import pytest
    from safetensors.torch import load_file

    from vemi_eval.training.codec import train_codec
    from vemi_eval.training.codec_recipes import named_recipes
    from vemi_eval.training.state import write_weights

    torch.manual_seed(0)
    start = tmp_path / "start.safetensors"
    write_weights(start, MimiCodec(codec_config("tiny")).state_dict(), {"preset": "tiny"})
    recipe = dataclasses.replace(named_recipes()["v1-decoder-gan"], batch_size=2, segment_frames=2,
                                 warmup_steps=1)  # fmt: skip
    seen: list[str] = []

    def run(name: str, kill_at: int | None = None):
        def log(msg: str) -> None:
            seen.append(msg)
            if kill_at is not None and msg.startswith(f"step {kill_at} "):
                raise _Killed

        out = tmp_path / f"{name}.safetensors"
        info = train_codec(out, minutes=1, recipe=recipe, max_steps=4, evaluate=False, init_from=start,
                           audio=_FakeAudio(batch_size=2).inner, log=log, log_every=1,
                           checkpoint_every_s=0.0)  # fmt: skip
        return out, info

    straight, info = run("straight")
    assert info["discriminator"]["parameters"] > 0 and info["codes_digest"] == info["codes_digest_at_start"]
    assert all(k in info["final_losses_mean_last_500"] for k in ("adv", "feat", "disc", "level"))
    assert " adv=" in seen[-1] and " feat=" in seen[-1]
    with pytest.raises(_Killed):
        run("killed", kill_at=3)
    resumed, _ = run("killed")
    a, c = load_file(str(straight)), load_file(str(resumed))
    for k in a:  # bit-identical only if the discriminator and its moments were restored too
        torch.testing.assert_close(a[k], c[k], atol=0, rtol=0)


def _istft_recipe():
    import dataclasses

    from vemi_eval.training.codec_recipes import named_recipes

    return dataclasses.replace(named_recipes()["ab-istft"], batch_size=2, segment_frames=2, warmup_steps=1)


def _seanet_start(tmp_path):
    from vemi_eval.training.state import write_weights

    torch.manual_seed(0)
    start = tmp_path / "start.safetensors"
    write_weights(start, MimiCodec(codec_config("tiny")).state_dict(), {"preset": "tiny"})
    return start


def _run_istft(tmp_path, name: str, start, kill_at: int | None = None, steps: int = 4):
    from vemi_eval.training.codec import train_codec

    def log(msg: str) -> None:
        if kill_at is not None and msg.startswith(f"step {kill_at} "):
            raise _Killed

    out = tmp_path / f"{name}.safetensors"
    info = train_codec(out, minutes=1, recipe=_istft_recipe(), max_steps=steps, evaluate=False,
                       init_from=start, audio=_FakeAudio(batch_size=2).inner, log=log, log_every=1,
                       checkpoint_every_s=0.0, clock="cpu")  # fmt: skip
    return out, info


def _two_gan_steps_on_an_istft_codec(tmp_path, recipe_name: str):
    """(start file, output file, sidecar) of two steps of ``recipe_name`` from a random tiny-istft codec."""
    import dataclasses

    from vemi_eval.training.codec import train_codec
    from vemi_eval.training.codec_recipes import named_recipes
    from vemi_eval.training.state import write_weights

    torch.manual_seed(0)
    start, out = tmp_path / "start.safetensors", tmp_path / "gan.safetensors"
    write_weights(start, MimiCodec(codec_config("tiny-istft")).state_dict(), {"preset": "tiny-istft"})
    recipe = dataclasses.replace(named_recipes()[recipe_name], batch_size=2, segment_frames=2, warmup_steps=1)
    info = train_codec(out, minutes=1, recipe=recipe, max_steps=2, evaluate=False, init_from=start,
                       audio=_FakeAudio(batch_size=2).inner, log=lambda m: None, checkpoint_every_s=0.0,
                       clock="cpu")  # fmt: skip
    return start, out, info


def test_the_istft_full_gan_recipe_trains_the_whole_codec_beside_a_discriminator(tmp_path):
    _, _, info = _two_gan_steps_on_an_istft_codec(tmp_path, "istft-full-gan")
    assert info["discriminator"]["parameters"] > 0 and info["warm_start"]["fresh_modules"] == []
    assert {"adv", "feat", "disc", "stft", "level"} <= set(info["final_losses_mean_last_500"])
    assert not info["frozen"]  # every part learns (new codes)


def test_the_istft_decoder_gan_recipe_keeps_the_codes_so_the_lm_still_pairs(tmp_path):
    start, out, info = _two_gan_steps_on_an_istft_codec(tmp_path, "istft-decoder-gan")
    assert info["discriminator"]["parameters"] > 0 and info["frozen"]
    assert info["codes_digest"] == info["codes_digest_at_start"]
    assert {"adv", "feat", "disc"} <= set(info["final_losses_mean_last_500"])
    assert tokenizer_sha256(out) == tokenizer_sha256(start)


def test_the_istft_decoder_phase_recipe_learns_the_phase_term_on_frozen_codes(tmp_path):
    start, out, info = _two_gan_steps_on_an_istft_codec(tmp_path, "istft-decoder-phase")
    assert info["frozen"] and "discriminator" not in info
    assert info["codes_digest"] == info["codes_digest_at_start"]
    assert {"phase", "stft", "level"} <= set(info["final_losses_mean_last_500"])
    assert 0.0 < info["final_losses_mean_last_500"]["phase"] <= 2.0
    assert tokenizer_sha256(out) == tokenizer_sha256(start)


def test_istft_recipe_trains_its_new_decoder_on_frozen_codes_and_resumes_exactly(tmp_path):
    import pytest
    from safetensors.torch import load_file

    start = _seanet_start(tmp_path)
    straight, info = _run_istft(tmp_path, "straight", start)
    assert info["warm_start"]["fresh_modules"] == ["decoder"] and info["clock"] == "cpu"
    assert info["codes_digest"] == info["codes_digest_at_start"] and info["train_cpu_s"] > 0
    assert {"stft", "level"} <= set(info["final_losses_mean_last_500"])
    with pytest.raises(_Killed):
        _run_istft(tmp_path, "killed", start, kill_at=3)
    resumed, _ = _run_istft(tmp_path, "killed", start)
    a, c = load_file(str(straight)), load_file(str(resumed))
    for k in a:
        torch.testing.assert_close(a[k], c[k], atol=0, rtol=0)


def test_without_its_state_a_run_goes_on_from_its_committed_weights_and_says_so(tmp_path):
    import pytest

    from vemi_eval.training.codec import _state_path

    start = _seanet_start(tmp_path)
    with pytest.raises(_Killed):
        _run_istft(tmp_path, "moved", start, kill_at=3)
    out = tmp_path / "moved.safetensors"
    _state_path(out).unlink()  # a fresh clone: the weights and sidecar were committed, the state was not
    _, info = _run_istft(tmp_path, "moved", start)
    gone = info["resumed_without_state"]
    assert gone["at_step"] == 2 and "fresh" in gone["optimizer"] and info["steps"] == 4 and info["final"]
    _, again = _run_istft(tmp_path, "other", start)
    assert again["resumed_without_state"] is None

"""Codec recipe options (issue 13): each loss or transform changes what it should and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_model.codec import MimiCodec, codec_config
from reference_model.codec.quantizer import EuclideanCodebook, ResidualVectorQuantizer
from tests.test_codec_training import _FakeAudio
from vemi_eval.training.codec import train_codec
from vemi_eval.training.codec_recipes import CodecRecipe, named_recipes, with_options
from vemi_eval.training.ervq import LevelInputs, balance_loss, decorrelation_loss, level_inputs
from vemi_eval.training.state import RecipeMismatchError


def _rvq(bins: int = 8, dim: int = 4, n_q: int = 2) -> ResidualVectorQuantizer:
    torch.manual_seed(0)
    return ResidualVectorQuantizer(
        dimension=dim, input_dimension=dim, output_dimension=dim, n_q=n_q, bins=bins
    )


# --- recipes and options ------------------------------------------------------------------------------
def test_default_recipes_keep_their_digest_and_options_change_it():
    # the bundled tiny codec's sidecar records 2b7f6c60ab35af2f: adding option fields must not move it
    assert named_recipes()["v1-continue"].digest() == "2b7f6c60ab35af2f"
    assert named_recipes()["v2"].digest() == "4fc1b4fb2cf68560"
    ervq = with_options(named_recipes()["v1-continue"], ["ervq"])
    assert ervq.options == ("ervq",) and ervq.balance_weight > 0 and ervq.reanchor_sharpness > 0
    assert ervq.digest() != named_recipes()["v1-continue"].digest()
    with pytest.raises(ValueError, match="unknown codec recipe option 'nope'"):
        with_options(CodecRecipe(), ["nope"])


def test_every_codec_option_is_declared_for_the_registry():
    from vemi_eval.training.codec_recipes import CODEC_OPTIONS
    from vemi_eval.training.recipes import available_recipes, check_options

    declared = {n for n, r in available_recipes().items() if r.trainer == "codec"}
    assert declared == set(CODEC_OPTIONS)
    check_options(sorted(declared), "codec")
    with pytest.raises(ValueError, match="unknown codec recipe option"):
        check_options(["ervq", "nope"], "codec")


def test_cli_refuses_an_unknown_option(capsys):
    from vemi_eval.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "codec", "--option", "nope", "--steps", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "unknown codec recipe option 'nope'" in err
    from vemi_eval.training.codec_recipes import CODEC_OPTIONS

    with pytest.raises(SystemExit):
        main(["train", "codec", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in CODEC_OPTIONS)  # the help names every option


# --- ERVQ ---------------------------------------------------------------------------------------------
def test_balance_loss_is_zero_for_uniform_confident_usage_and_one_for_collapse():
    rvq = _rvq(bins=8)
    cb = rvq.codebooks(1)[0]
    cb.embedding_sum.copy_(torch.eye(8, 4).repeat(1, 1) * 0 + torch.randn(8, 4) * 10)
    cb._clear_cache()
    emb = cb.embedding
    uniform = LevelInputs(emb.repeat(4, 1), torch.arange(8).repeat(4))
    collapsed = LevelInputs(emb[:1].repeat(32, 1), torch.zeros(32, dtype=torch.long))
    low = balance_loss([uniform], rvq, temperature=0.05).item()
    high = balance_loss([collapsed], rvq, temperature=0.05).item()
    assert low < 0.02 and high > 0.98


def test_decorrelation_loss_reads_the_cosine_of_adjacent_levels():
    rvq = _rvq(bins=2, dim=2)
    for cb, rows in zip(rvq.codebooks(2), ([[1.0, 0.0], [-1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]), strict=True):
        cb.embedding_sum.copy_(torch.tensor(rows))
        cb.cluster_usage.fill_(1.0)
        cb._clear_cache()
    r = torch.tensor([[1.0, 0.0]])
    first = LevelInputs(r, torch.tensor([0]))
    orthogonal = decorrelation_loss([first, LevelInputs(r, torch.tensor([0]))], rvq, 1.0)
    parallel = decorrelation_loss([first, LevelInputs(r, torch.tensor([1]))], rvq, 1.0)
    assert orthogonal.item() < 1e-6 and abs(parallel.item() - 1.0) < 1e-6


def test_reanchor_pulls_a_rarely_used_code_onto_the_data_and_leaves_busy_ones():
    cb = EuclideanCodebook(2, 4)
    centroids = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [50.0, 50.0]])
    cb.cluster_usage.copy_(torch.tensor([1.0, 1.0, 1.0, 1e-4]))
    cb.embedding_sum.copy_(centroids * cb.cluster_usage[:, None])
    cb._clear_cache()
    before = cb.embedding.clone()
    data = torch.tensor([[0.1, 0.0], [1.0, 0.1], [0.0, 0.9], [5.0, 5.0]])
    cb.reanchor(data, sharpness=10.0)
    after = cb.embedding
    assert torch.allclose(after[:3], before[:3], atol=1e-3)  # busy codes: alpha = exp(-13)
    assert torch.allclose(after[3], torch.tensor([5.0, 5.0]), atol=0.1)  # nearly unused: onto its feature


def test_level_inputs_retrace_the_quantizer_and_carry_gradient_to_the_latent():
    rvq = _rvq(bins=8, dim=4, n_q=3).train()
    latent = torch.randn(2, 4, 5, requires_grad=True)
    _, codes, _ = rvq(latent, n_q=3)
    rvq.eval()
    levels = level_inputs(rvq, latent, codes)
    assert [lv.codes.numel() for lv in levels] == [10, 10, 10]
    # each level's codes are the nearest centroid to its retraced residual (what the pass chose)
    for lv, cb in zip(levels, rvq.codebooks(3), strict=True):
        assert torch.equal(cb.encode(lv.residual.detach()), lv.codes)
    (balance_loss(levels, rvq, 1.0) + decorrelation_loss(levels, rvq, 1.0)).backward()
    assert latent.grad is not None and latent.grad.abs().sum() > 0


def _train_fake(tmp_path, name: str, options: tuple[str, ...], steps: int = 2):
    fake = _FakeAudio(batch_size=2)
    recipe = with_options(fake.recipe, options)
    fake.inner.recipe = recipe
    out = tmp_path / f"{name}.safetensors"
    info = train_codec(out, minutes=1, recipe=recipe, max_steps=steps, evaluate=False, audio=fake.inner,
                       log=lambda *_: None, log_every=1)  # fmt: skip
    return out, info


def test_ervq_training_records_its_terms_and_trained_with(tmp_path):
    _, base = _train_fake(tmp_path, "base", ())
    out, info = _train_fake(tmp_path, "ervq", ("ervq",))
    assert base["trained_with"] == [] and info["trained_with"] == ["ervq"]
    losses = info["final_losses_mean_last_500"]
    assert 0 <= losses["balance"] <= 1 and 0 <= losses["decorrelation"] <= 1
    assert "balance" not in base["final_losses_mean_last_500"]
    # a resume with another option set is refused
    fake = _FakeAudio(batch_size=2)
    with pytest.raises(RecipeMismatchError, match="another recipe"):
        train_codec(out, minutes=1, recipe=fake.recipe, max_steps=3, evaluate=False, audio=fake.inner,
                    log=lambda *_: None)  # fmt: skip


def test_codebook_usage_figures():
    from vemi_eval.measurements.codebook_usage import usage_figures

    h, ppl, share = usage_figures(np.arange(8).repeat(3), 16)
    assert abs(h - 3.0) < 1e-9 and abs(ppl - 8.0) < 1e-9 and share == 0.5
    assert usage_figures(np.zeros(50, dtype=int), 16) == (0.0, 1.0, 1 / 16)


def test_plain_codec_forward_is_untouched_by_the_taps():
    from vemi_eval.training.codec_losses import QuantizerTaps

    torch.manual_seed(0)
    codec = MimiCodec(codec_config("tiny")).eval()
    x = torch.randn(1, 1, 1920 * 2) * 0.1
    with torch.no_grad():
        ref = codec(x, 8)[0]
        taps = QuantizerTaps(codec)
        out = codec(x, 8)[0]
        taps.remove()
    assert torch.equal(ref, out) and set(taps.seen) == {"rvq_first", "rvq_rest"}


# --- semantic distillation ------------------------------------------------------------------------------
def test_distillation_gradient_reaches_only_the_first_codebook_path_and_the_head():
    from vemi_eval.training.codec_losses import QuantizerTaps
    from vemi_eval.training.semantic import SemanticHead, distill_loss

    torch.manual_seed(0)
    codec = MimiCodec(codec_config("tiny")).train()
    taps = QuantizerTaps(codec)
    x = torch.randn(2, 1, 1920 * 3) * 0.1
    codec(x, 8)
    head = SemanticHead(128, 384)
    loss = distill_loss(head, taps.take()["rvq_first"][1], torch.randn(2, 384, 3))
    loss.backward()
    taps.remove()

    def moved(prefix: str) -> bool:
        grads = [p.grad for n, p in codec.named_parameters() if n.startswith(prefix)]
        return any(g is not None and g.abs().sum() > 0 for g in grads)

    assert head.proj.weight.grad.abs().sum() > 0
    for path in ("quantizer.rvq_first.", "encoder.", "encoder_transformer.", "downsample."):
        assert moved(path), path
    for other in ("quantizer.rvq_rest.", "decoder.", "decoder_transformer.", "upsample."):
        assert not moved(other), other


def test_whisper_teacher_gives_codec_rate_features():
    from vemi_eval.training.semantic import WhisperTeacher

    teacher = WhisperTeacher(24000, 1920)
    t = torch.arange(1920 * 3) / 24000
    x = torch.stack([0.1 * torch.sin(2 * torch.pi * 200 * t), 0.05 * torch.randn(t.numel())]).view(2, 1, -1)
    f = teacher.features(x)
    assert f.shape == (2, teacher.info.dim, 3) and torch.isfinite(f).all()
    assert torch.equal(f, teacher.features(x))  # deterministic
    assert not torch.allclose(f[0], f[1])
    assert teacher.info.weights_sha256


def test_semantic_distill_training_keeps_its_head_in_the_state_not_the_weights(tmp_path):
    from safetensors.torch import load_file

    out, info = _train_fake(tmp_path, "sem", ("semantic-distill",), steps=2)
    assert (
        info["trained_with"] == ["semantic-distill"]
        and 0 <= info["final_losses_mean_last_500"]["semantic"] <= 2
    )
    assert info["semantic_teacher"]["dim"] == 384
    state = load_file(str(out.with_suffix(".state.safetensors")))
    assert "extra.semantic_head.proj.weight" in state
    assert set(load_file(str(out))) == set(MimiCodec(codec_config("tiny")).state_dict())
    _, resumed = _train_fake(tmp_path, "sem", ("semantic-distill",), steps=3)  # resumes with its head
    assert resumed["steps"] == 3


def test_frame_cosine_of_the_semantic_content_kind():
    from vemi_eval.measurements.semantic_content import frame_cosine

    a = np.random.default_rng(0).normal(size=(10, 4))
    assert abs(frame_cosine(a, a) - 1.0) < 1e-12 and abs(frame_cosine(a, -a[:7]) + 1.0) < 1e-12


# --- multi-rate -------------------------------------------------------------------------------------------
def _multi_rate_codec(strides):
    cfg = codec_config("tiny")
    if strides is not None:
        cfg.quantizer["multi_rate_strides"] = list(strides)
    torch.manual_seed(0)
    return MimiCodec(cfg).eval()


def test_multi_rate_with_strides_all_one_is_the_plain_rvq_exactly():
    plain, ones = _multi_rate_codec(None), _multi_rate_codec([1, 1, 1])
    x = torch.randn(2, 1, 1920 * 5) * 0.1
    with torch.no_grad():
        codes = plain.encode(x)
        assert torch.equal(ones.encode(x), codes)
        assert torch.equal(ones.decode(codes), plain.decode(codes))
    plain.train(), ones.train()
    torch.manual_seed(1)
    a = plain(x, 8)
    torch.manual_seed(1)
    b = ones(x, 8)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)


def test_pool_and_repeat_frames():
    from reference_model.codec.quantizer import pool_frames, repeat_frames

    x = torch.arange(5.0).view(1, 5, 1)
    assert pool_frames(x, 2).view(-1).tolist() == [0.5, 2.5, 4.0]  # the last window has one frame
    assert repeat_frames(pool_frames(x, 2), 2, 5).view(-1).tolist() == [0.5, 0.5, 2.5, 2.5, 4.0]


def test_multi_rate_codes_repeat_over_their_windows_and_stream_as_offline():
    from reference_model import CodecStreamer

    codec = _multi_rate_codec([4, 2])
    codec.set_num_codebooks(8)
    assert codec.quantizer.level_strides[:4] == (1, 4, 2, 1) and codec.quantizer.code_window == 4
    x = torch.randn(1, 1, 1920 * 10) * 0.1
    with torch.no_grad():
        codes = codec.encode(x)
        coarse = codes[0, 1]
        assert all(len(set(coarse[k : k + 4].tolist())) == 1 for k in range(0, 10, 4))
        assert all(len(set(codes[0, 2, k : k + 2].tolist())) == 1 for k in range(0, 10, 2))
        streamer = CodecStreamer(codec)
        parts = [streamer.encode(x[..., f * 1920 : (f + 1) * 1920]) for f in range(10)]
        assert [p.shape[-1] for p in parts] == [0, 0, 0, 4, 0, 0, 0, 4, 0, 0]
        streamed = torch.cat(parts + [streamer.flush()], dim=-1)
        assert torch.equal(streamed, codes)
        out = torch.cat([streamer.decode(streamed[..., f : f + 1]) for f in range(10)], -1)
        torch.testing.assert_close(out, codec.decode(codes), atol=1e-5, rtol=1e-4)


def test_bitrate_counts_each_level_at_its_rate_and_first_audio_waits_for_the_window():
    from vemi_eval.data.codec_roundtrip import bitrate_kbps, sent_kbps
    from vemi_eval.measurements.first_audio import first_audio

    plain, multi = _multi_rate_codec(None), _multi_rate_codec([4, 2])
    assert bitrate_kbps(plain, 8) == 1.1
    assert bitrate_kbps(multi, 8) == round((1 + 0.25 + 0.5 + 5) * 11 * 12.5 / 1000, 4)
    x = torch.randn(1, 1, 1920 * 8) * 0.1
    with torch.no_grad():
        assert abs(sent_kbps(multi, multi.encode(x)[:, :8]) - bitrate_kbps(multi, 8)) < 1e-4  # rounded
    audio = x[0, 0].numpy()
    assert first_audio(plain, audio, 8)[0] == 1 and first_audio(multi, audio, 8)[0] == 4


def test_multi_rate_training_records_its_strides_and_load_codec_reads_them(tmp_path):
    from reference_model.codec import load_codec
    from reference_model.errors import CheckpointError

    with pytest.raises(ValueError, match="cannot be combined"):
        with_options(CodecRecipe(), ["ervq", "multi-rate"])
    out, info = _train_fake(tmp_path, "mr", ("multi-rate",))
    assert info["trained_with"] == ["multi-rate"]
    assert info["recipe"]["config"]["quantizer"]["multi_rate_strides"] == [4, 2]
    codec = load_codec("tiny", out)
    assert codec.quantizer.level_strides[1:3] == (4, 2)
    cfg = codec_config("tiny")
    cfg.quantizer["multi_rate_strides"] = [2]
    with pytest.raises(CheckpointError, match="multi_rate_strides"):
        load_codec(cfg, out)
    assert load_codec("tiny", "random").quantizer.level_strides == (1,) * 32  # the default stays single-rate


def test_the_duplex_loop_refuses_a_multi_rate_codec_in_one_line():
    from reference_model import DuplexSpec, build_duplex

    model = build_duplex(DuplexSpec(lm_checkpoint="random", codec_checkpoint="random"))
    model.codec_encode = lambda pcm: torch.zeros(1, 8, 0, dtype=torch.long)  # a window's first frame
    with pytest.raises(ValueError, match="multi-rate codec"):
        model.encode_user(torch.zeros(1, 1, model.frame_size))


def _kind_context(kind: str, codec, params: dict, monkeypatch, module):
    from types import SimpleNamespace

    from vemi_eval.data.byo import Dataset
    from vemi_eval.data.corpus import Utterance
    from vemi_eval.measurements import MeasureContext, VariantRef

    rng = np.random.default_rng(0)
    utts = [Utterance(f"u{i}", "s", None, (0.1 * rng.standard_normal(1920 * 6)).astype(np.float32), 24000)
            for i in range(2)]  # fmt: skip
    monkeypatch.setattr(module, "load_data", lambda ctx, sr, p: Dataset("fake", utts))
    ref = VariantRef("v", [], build=lambda **_: SimpleNamespace(codec=codec))
    return MeasureContext("s", kind, ref, ref, params, seed=0, quick=False, device="cpu")


def test_codebook_usage_counts_a_multi_rate_level_once_per_window(monkeypatch):
    import vemi_eval.measurements.codebook_usage as kind

    codec = _multi_rate_codec([4, 2])
    codec.set_num_codebooks(8)
    records = kind.measure_codebook_usage(
        _kind_context("codebook_usage", codec, {"levels": 3}, monkeypatch, kind)
    )
    frames = {r.condition["level"]: r.n for r in records if r.metric == "codebook_perplexity"}
    assert frames == {1: 12, 2: 4, 3: 6}  # 2 utterances x 6 frames: every frame, every 4th, every 2nd
    assert all(0 < r.value <= 1 for r in records if r.metric == "codes_used_share")


def test_first_audio_kind_reads_one_frame_for_the_single_rate_codec(monkeypatch):
    import vemi_eval.measurements.first_audio as kind

    codec = _multi_rate_codec(None)
    codec.set_num_codebooks(8)
    records = kind.measure_first_audio(_kind_context("first_audio", codec, {}, monkeypatch, kind))
    by = {r.metric: r for r in records}
    assert by["input_frames_to_first_audio"].value == 1.0
    assert by["first_audio_latency_ms"].value >= 80.0 and by["first_audio_latency_ms"].n == 2

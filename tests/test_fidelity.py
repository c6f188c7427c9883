"""The fidelity measurement: exact variants score as exact, a lossy one does not, teacher forcing forces."""

from __future__ import annotations

import functools

import pytest
import torch

from reference_model import DuplexSpec, build_duplex
from reference_model.probes import layer_linear_flops
from vemi_eval.measurements import MeasureContext, VariantRef
from vemi_eval.measurements.fidelity import free_run, measure_fidelity, teacher_forced_logits, user_codes

FRAMES = 12


@functools.cache
def _cached(flags: tuple[str, ...], temp: float):
    # random LM weights: these tests check the measurement's mechanics, whatever the bundled LM learned
    spec = DuplexSpec(
        lm="tiny", codec="tiny", lm_checkpoint="random", flags=list(flags), temp=temp, temp_text=temp
    )
    return build_duplex(spec)


def _ref(name: str, flags: list[str], baseline: bool = False) -> VariantRef:
    def build(batch_size: int = 1, fresh: bool = False, **overrides):
        spec = DuplexSpec(
            lm="tiny",
            codec="tiny",
            lm_checkpoint="random",
            flags=flags,
            batch_size=batch_size,
            seed=0,
            **overrides,
        )
        return build_duplex(spec)

    return VariantRef(name=name, flags=flags, build=build, is_baseline=baseline)


def _measure(flags: list[str]) -> dict[str, object]:
    torch.set_num_threads(1)
    base = _ref("baseline", [], baseline=True)
    variant = base if not flags else _ref(",".join(flags), flags)
    ctx = MeasureContext(
        suite="fidelity",
        kind="fidelity",
        variant=variant,
        baseline=base,
        # seeded random user codes: the mechanics, not what a corpus's voices happen to route
        params={"frames": FRAMES, "n_boot": 50, "input": "random"},
        seed=0,
        quick=False,
        device="cpu",
    )
    records = {r.metric: r for r in measure_fidelity(ctx)}
    assert len(ctx.samples) == FRAMES
    return records


def test_baseline_against_itself_is_exact() -> None:
    r = _measure([])
    for metric in ("token_agreement", "text_token_agreement", "audio_token_agreement"):
        assert r[metric].value == 1.0
    assert (
        r["first_divergence_step"].value == FRAMES and r["first_divergence_step"].extra["diverged"] is False
    )
    assert r["text_kl"].value == pytest.approx(0.0, abs=1e-9) and r["audio_kl"].value == pytest.approx(
        0.0, abs=1e-9
    )
    assert r["text_top1_agreement"].value == 1.0 and r["audio_top1_agreement"].value == 1.0
    assert r["layer_share_processed"].value == 1.0


def test_speculative_is_exact_and_reports_acceptance() -> None:
    r = _measure(["speculative=4"])
    assert r["token_agreement"].value == 1.0 and r["first_divergence_step"].value == FRAMES
    assert 0.0 <= r["speculative_acceptance_rate"].value <= 1.0
    assert r["speculative_tokens_per_round"].value >= 1.0
    # an always-rejecting draft gives exactly 0 and 1.0 (this seeded run accepts about 7% of drafts);
    # that a draft equal to the target gives exactly 1 is test_speculative's
    assert r["speculative_acceptance_rate"].value > 0.0 and r["speculative_tokens_per_round"].value > 1.0


def test_lossy_variant_diverges() -> None:
    r = _measure(["mod=0.5"])
    assert r["text_kl"].value > 1e-4 and r["audio_kl"].value > 1e-4
    assert r["token_agreement"].value < 1.0 and r["first_divergence_step"].extra["diverged"] is True
    assert 0.2 < r["layer_share_processed"].value < 0.8
    full = sum(layer_linear_flops(layer) for layer in _cached((), 0.0).lm.transformer.layers)
    assert r["flops_temporal_linear_per_frame"].value < full


def test_teacher_forcing_reproduces_own_logits_and_forces_history() -> None:
    torch.set_num_threads(1)
    model = _cached((), 0.0)
    model.reset()
    codes = user_codes(model, 8, seed=3)
    logits_free = []
    original = model.streamer.depformer_sample

    tokens = []

    def spy(hidden, text):
        audio = original(hidden, text)
        logits_free.append(
            (model.streamer.last_text_logits.clone(), model.streamer.last_audio_logits.clone())
        )
        tokens.append(torch.cat([text[:, None], audio], 1))
        return audio

    model.streamer.depformer_sample = spy
    for c in codes:
        model.lm_step(c)
    model.streamer.depformer_sample = original
    own = torch.stack(tokens)
    model.reset()
    assert torch.equal(free_run(model, codes), own)
    model.reset()
    text, audio = teacher_forced_logits(model, codes, own)
    # fed its own tokens, the teacher-forced pass gives the free run's logits
    for t, (tl, al) in enumerate(logits_free):
        torch.testing.assert_close(text[t], tl)
        torch.testing.assert_close(audio[t], al, rtol=1e-4, atol=1e-4)
    # fed other tokens, the history really changes: text logits after step 0 differ
    other = (own + 1) % 2000
    model.reset()
    text_other, _ = teacher_forced_logits(model, codes, other)
    torch.testing.assert_close(text_other[0], text[0])  # step 0 sees no generated history yet
    assert not torch.allclose(text_other[2:], text[2:])


def test_dialogue_input_makes_the_trained_lm_speak_and_names_its_data() -> None:
    """On held-out dialogue the bundled (trained) LM says words inside the window, so the flags are
    measured on a model that answers; the records carry the sessions' hash and the word-frame count."""
    torch.set_num_threads(1)

    def build(batch_size: int = 1, fresh: bool = False, **overrides):
        return build_duplex(DuplexSpec(lm="tiny", codec="tiny", batch_size=batch_size, seed=0, **overrides))

    base = VariantRef(name="baseline", flags=[], build=build, is_baseline=True)
    ctx = MeasureContext(
        suite="fidelity",
        kind="fidelity",
        variant=base,
        baseline=base,
        params={"frames": 70, "n_boot": 20, "input": "dialogue"},
        seed=0,
        quick=False,
        device="cpu",
    )
    records = {r.metric: r for r in measure_fidelity(ctx)}
    rec = records["text_token_agreement"]
    assert rec.extra["input"] == "dialogue" and rec.data["dialogue_heldout"]
    assert rec.extra["baseline_word_frames"] > 0
    assert records["text_top1_agreement_words"].value == 1.0  # the baseline against itself


def test_fidelity_input_is_checked_before_any_work() -> None:
    from vemi_eval.measurements.fidelity import check

    check({"frames": 10, "n_boot": 10, "input": "random"})
    with pytest.raises(ValueError, match="input must be one of"):
        check({"frames": 10, "n_boot": 10, "input": "speech"})

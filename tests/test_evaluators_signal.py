"""Reference-based evaluators (PESQ, STOI/ESTOI, SI-SDR) and DNSMOS: known values, monotonic along an
SNR ladder, and errors (never a made-up score) for inputs they cannot score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vemi_eval.data.corpus import espeak_corpus
from vemi_eval.data.noise import make_noise, mix_at_snr
from vemi_eval.evaluators import EvaluatorError, evaluators_info
from vemi_eval.evaluators.pesq import pesq_nb, pesq_wb
from vemi_eval.evaluators.scoring import align
from vemi_eval.evaluators.sisdr import si_sdr
from vemi_eval.evaluators.stoi import estoi, stoi

SR = 16000
LADDER = (30, 20, 10, 5, 0)


@pytest.fixture(scope="module")
def clip():
    torch.set_num_threads(1)
    return espeak_corpus("heldout", quick=True, sample_rate=SR)[0].audio


def test_pesq_of_a_clip_against_itself(clip):
    assert pesq_wb(clip, clip, SR) == pytest.approx(4.644, abs=0.01)
    assert pesq_nb(clip, clip, SR) == pytest.approx(4.549, abs=0.01)


@pytest.mark.parametrize("kind", ["white", "pink"])
def test_quality_falls_monotonically_as_snr_falls(clip, kind):
    noise = make_noise(kind, clip.size, SR, seed=0)
    mixes = [mix_at_snr(clip, noise, snr, SR) for snr in LADDER]
    for fn in (pesq_wb, stoi, estoi):
        vals = [fn(clip, m, SR) for m in mixes]
        assert all(a > b for a, b in zip(vals, vals[1:])), (fn.__name__, kind, vals)
    sdr = [si_sdr(clip, m) for m in mixes]
    assert all(abs(s - snr) < 3 for s, snr in zip(sdr, LADDER)), sdr  # active-level SNR >= whole-clip SDR
    assert all(a > b for a, b in zip(sdr, sdr[1:]))


def test_si_sdr_known_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SR)
    x -= x.mean()  # SI-SDR removes means: zero-mean signals make the expected value exact
    n = rng.standard_normal(SR)
    n -= n.mean()
    n -= (n @ x) / (x @ x) * x  # orthogonal to x
    n *= np.sqrt((x @ x) / (n @ n)) * 10 ** (-10 / 20)
    assert si_sdr(x, 3.0 * (x + n)) == pytest.approx(10.0, abs=1e-6)  # scale-invariant
    with pytest.raises(EvaluatorError, match="silent"):
        si_sdr(np.zeros(100), x[:100])
    with pytest.raises(EvaluatorError, match="infinite"):
        si_sdr(x, 2 * x)


def test_align_finds_the_lag(clip):
    delayed = np.concatenate([np.zeros(480, np.float32), clip])[: clip.size]
    out, lag = align(clip, delayed, SR)
    assert lag == 480 and np.allclose(out[: clip.size - 480], clip[: clip.size - 480])


def _phase_scrambled(x: np.ndarray, seed: int) -> np.ndarray:
    """``x`` with random STFT phase: what a vocoder keeps (magnitudes), not the waveform."""
    from scipy.signal import istft, stft

    _, _, z = stft(x, SR, nperseg=256)  # 16 ms windows: random phase smears energy within one, not more
    phase = np.exp(2j * np.pi * np.random.default_rng(seed).random(z.shape))
    return istft(np.abs(z) * phase, SR, nperseg=256)[1][: x.size].astype(np.float32)


def test_align_finds_the_lag_of_a_signal_without_its_phase(clip):
    """Waveform cross-correlation has no peak at the true lag when the phase is not kept (vocoders, iSTFT
    decoders: the old search was 8-10 ms off here); the envelope finds it within 2 ms, and STOI is not cut by
    a spurious shift."""
    scrambled = _phase_scrambled(clip, seed=0)
    for delay in (0, 480, -320):
        moved = np.zeros_like(scrambled)  # delayed by `delay` samples (advanced when negative), no wrap
        if delay >= 0:
            moved[delay:] = scrambled[: scrambled.size - delay]
        else:
            moved[:delay] = scrambled[-delay:]
        _, lag = align(clip, moved, SR)
        assert abs(lag - delay) <= 0.002 * SR, (delay, lag)
    aligned, _ = align(clip, scrambled, SR)
    assert stoi(clip, aligned, SR) == pytest.approx(stoi(clip, scrambled, SR), abs=0.02)


def test_unscorable_inputs_raise_instead_of_scoring(clip):
    with pytest.raises(EvaluatorError, match="at least 0.25 s"):
        pesq_wb(clip[:1000], clip[:1000], SR)
    with pytest.raises(EvaluatorError, match="PESQ-WB failed"):
        pesq_wb(clip, np.zeros_like(clip), SR)  # pesq finds no utterance in silence
    with pytest.raises(EvaluatorError, match="STFT frames"):
        stoi(clip[:3000], clip[:3000], SR)
    bad = clip.copy()
    bad[10] = np.nan
    with pytest.raises(EvaluatorError, match="NaN"):
        estoi(clip, bad, SR)


def test_dnsmos_prefers_clean_speech(clip):
    from vemi_eval.evaluators.dnsmos import dnsmos

    clean = dnsmos(clip, SR)
    noisy = dnsmos(mix_at_snr(clip, make_noise("white", clip.size, SR, seed=0), 0, SR), SR)
    assert set(clean) == {"ovrl", "sig", "bak", "p808"}
    assert 1 <= noisy["ovrl"] < clean["ovrl"] <= 5 and noisy["bak"] < clean["bak"]
    with pytest.raises(EvaluatorError, match="full scale"):
        dnsmos(clip * 100, SR)


# The evaluator weights every committed figure was scored with: another file is another evaluator.
PINNED_WEIGHTS = {
    "asr": {"model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"},
    "dnsmos": {
        "sig_bak_ovr.onnx": "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
        "model_v8.onnx": "9246480c58567bc6affd4200938e77eef49468c8bc7ed3776d109c07456f6e91",
    },
    "speaker": {"pretrained.pt": "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"},
}


def test_evaluators_are_pinned_by_version_and_weights():
    info = evaluators_info()
    for name in ("asr", "dnsmos", "speaker"):
        w = info[name]["weights_sha256"]
        assert w and all(len(h) == 64 for h in w.values()), (name, info[name])
        assert w == PINNED_WEIGHTS[name], (name, w)
    assert all(info[n]["version"] != "not installed" for n in info)

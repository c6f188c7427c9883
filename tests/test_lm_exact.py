"""The LM against the public moshi package: same weights, same inputs -> same tokens and logits.

moshi's LMModel is built with random weights exactly as moshi's loader builds it, its state dict saved
and loaded into ours; then both stream side by side (moshi's LMGen vs our Streamer).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("NO_TORCH_COMPILE", "1")  # moshi would torch.compile its out_norm on CPU (seconds)

import moshi.models.lm as moshi_lm  # noqa: E402  (plain: a missing moshi must fail the suite, not skip)

from reference_model import CheckpointError, ConfigError, Streamer, load_lm  # noqa: E402
from reference_model.checkpoint import save  # noqa: E402
from reference_model.config import PRESETS_DIR, load_lm_config  # noqa: E402

TINY = json.loads((PRESETS_DIR / "tiny_lm.json").read_text())
# Different ratios: acoustic delay 2, GQA (kv_repeat 2, which moshi applies to both transformers),
# dep_q 4, a context of 20 so that the ring cache wraps, FFN 4x (the 21/8 gating branch), depformer RoPE.
SMALL = dict(
    TINY,
    n_q=8,
    dep_q=4,
    delays=[0, 0, 2, 2, 2, 0, 2, 2, 2],
    kv_repeat=2,
    dim=128,
    num_heads=4,
    hidden_scale=4,
    depformer_dim=64,
    depformer_num_heads=4,
    depformer_dim_feedforward=256,
    depformer_pos_emb="rope",
    text_card=500,
    card=300,
    context=20,
    max_period=100000,
)


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def build_moshi(cfg: dict, seed: int = 0):
    kwargs = dict(cfg)
    kwargs.pop("depformer_causal", None)  # moshi's loader drops it too
    torch.manual_seed(seed)
    model = moshi_lm.LMModel(device="cpu", dtype=torch.float32, **kwargs).eval()
    with torch.no_grad():  # moshi leaves norms at one: randomise them so they are tested too
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.normal_(1.0, 0.1)
    return model


@pytest.fixture(scope="module", params=["tiny", "small"])
def pair(request, tmp_path_factory):
    cfg = TINY if request.param == "tiny" else SMALL
    ref = build_moshi(cfg)
    path = tmp_path_factory.mktemp("lm") / "lm.safetensors"
    save(ref, path)
    return cfg, ref, load_lm(cfg, path), path


def stream_both(cfg, ref, ours, steps, *, sampling=False, seed=0):
    """Run moshi's LMGen and our Streamer on the same random user codes; collect outputs and logits."""
    temp = 0.8 if sampling else 0.0
    gen = moshi_lm.LMGen(ref, use_sampling=sampling, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
    text_logits: list[torch.Tensor] = []
    audio_logits: list[torch.Tensor] = []
    gen.on_text_logits_hook = lambda logits: text_logits.append(logits.reshape(1, -1).clone())
    forward_depformer = ref.forward_depformer

    def hooked(cb_index, sequence, transformer_out):
        logits = forward_depformer(cb_index, sequence, transformer_out)
        audio_logits.append(logits.reshape(1, -1).clone())
        return logits

    ref.forward_depformer = hooked
    streamer = Streamer(ours, temp=temp, temp_text=temp and 0.7, top_k=250, top_k_text=25)
    n_user = cfg["n_q"] - cfg["dep_q"]
    gen_rng = torch.Generator().manual_seed(seed)
    results = []
    try:
        with gen.streaming(1):
            for _ in range(steps):
                codes = torch.randint(0, cfg["card"], (1, n_user, 1), generator=gen_rng)
                state = torch.get_rng_state()
                a = gen.step(codes)
                torch.set_rng_state(state)  # both samplers draw the same random numbers
                b = streamer.step(codes)
                n = cfg["dep_q"]
                results.append(
                    (
                        a,
                        b,
                        text_logits[-1],
                        streamer.last_text_logits,
                        torch.cat(audio_logits[-n:]),
                        streamer.last_audio_logits[0],
                    )
                )
    finally:
        del ref.forward_depformer
    return results


def test_greedy_streaming_matches_moshi(pair) -> None:
    cfg, ref, ours, _ = pair
    results = stream_both(cfg, ref, ours, 55)
    max_delay = max(cfg["delays"])
    for i, (a, b, tl_ref, tl, al_ref, al) in enumerate(results):
        assert (a is None) == (b is None) == (i < max_delay), i
        if a is not None:
            assert torch.equal(a, b), f"step {i}: moshi {a.flatten().tolist()} vs ours {b.flatten().tolist()}"
        torch.testing.assert_close(tl, tl_ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(al, al_ref, atol=1e-4, rtol=0)


def test_greedy_streaming_matches_moshi_at_batch_3(pair) -> None:
    """Three conversations side by side, each its own user codes: the same tokens as moshi's batched
    LMGen at every step (a batch-1-only exactness would miss a cache or mask that mixes rows)."""
    cfg, ref, ours, _ = pair
    batch, n_user = 3, cfg["n_q"] - cfg["dep_q"]
    gen = moshi_lm.LMGen(ref, use_sampling=False, temp=0.8, temp_text=0.7, top_k=250, top_k_text=25)
    streamer = Streamer(ours, temp=0.0, temp_text=0.0, top_k=250, top_k_text=25, batch_size=batch)
    rng = torch.Generator().manual_seed(1)
    rows_differ = False
    with gen.streaming(batch):
        for i in range(45):
            codes = torch.randint(0, cfg["card"], (batch, n_user, 1), generator=rng)
            a, b = gen.step(codes), streamer.step(codes)
            assert (a is None) == (b is None), i
            if a is not None:
                assert a.shape[0] == batch and torch.equal(a, b), f"step {i}"
                rows_differ |= not (torch.equal(a[0], a[1]) and torch.equal(a[1], a[2]))
    assert rows_differ  # the rows are separate conversations, not one copied three times


def test_sampled_streaming_matches_moshi_and_is_deterministic(pair) -> None:
    cfg, ref, ours, _ = pair
    torch.manual_seed(123)
    first = stream_both(cfg, ref, ours, 30, sampling=True)
    for a, b, *_ in first:
        assert (a is None and b is None) or torch.equal(a, b)
    torch.manual_seed(123)
    again = stream_both(cfg, ref, ours, 30, sampling=True)
    outs = [b for _, b, *_ in first if b is not None]
    assert outs and all(torch.equal(x, y) for x, y in zip(outs, [b for _, b, *_ in again if b is not None]))


def test_reset_of_one_item_equals_a_fresh_stream(pair) -> None:
    cfg, _, ours, _ = pair
    n_user, card, max_delay = cfg["n_q"] - cfg["dep_q"], cfg["card"], max(cfg["delays"])
    rng = torch.Generator().manual_seed(7)
    codes = torch.randint(0, card, (40, 2, n_user, 1), generator=rng)
    batch = Streamer(ours, temp=0, temp_text=0, batch_size=2)
    alone = Streamer(ours, temp=0, temp_text=0)  # item 1 without any reset
    for t in range(12):
        batch.step(codes[t])
        alone.step(codes[t, 1:])
    batch.reset(torch.tensor([True, False]))
    fresh = Streamer(ours, temp=0, temp_text=0)
    for t in range(12, 40):
        out = batch.step(codes[t])
        ref0 = fresh.step(codes[t, :1])
        ref1 = alone.step(codes[t, 1:])
        assert torch.equal(out[1:], ref1)
        if ref0 is None:
            assert t - 12 < max_delay and (out[0] == -2).all()
        else:
            assert torch.equal(out[:1], ref0), t
            torch.testing.assert_close(batch.last_text_logits[:1], fresh.last_text_logits, atol=1e-5, rtol=0)
    batch.reset()
    assert batch.step(codes[0]) is None or max_delay == 0


def test_depformer_parallel_matches_streamed_logits(pair) -> None:
    cfg, _, ours, _ = pair
    streamer = Streamer(ours, temp=0.8, temp_text=0.7, batch_size=2)
    torch.manual_seed(0)
    n_user = cfg["n_q"] - cfg["dep_q"]
    for _ in range(3):
        out = streamer.step(torch.randint(0, cfg["card"], (2, n_user, 1)))
    hidden = torch.randn(2, cfg["dim"])
    text = torch.tensor([3, 17])
    audio = streamer.depformer_sample(hidden, text)
    tokens_in = torch.cat([text[:, None], audio[:, :-1]], dim=1)
    logits = ours.depformer_forward_parallel(hidden, tokens_in)
    assert out is None or out.shape == (2, 1 + cfg["dep_q"], 1)
    torch.testing.assert_close(logits, streamer.last_audio_logits, atol=1e-5, rtol=0)


def test_lut_conditioner_matches_moshi(tmp_path) -> None:
    from moshi.conditioners import ConditionAttributes
    from moshi.models.loaders import get_moshi_lm

    cfg = json.loads((PRESETS_DIR / "moshi-2b.json").read_text())
    cfg.update(SMALL, depformer_num_layers=1, num_layers=2, context=3000)
    cfg.pop("kv_repeat")
    torch.manual_seed(0)
    ref = get_moshi_lm(None, lm_kwargs=json.loads(json.dumps(cfg)), device="cpu", dtype=torch.float32).eval()
    save(ref, tmp_path / "c.safetensors")
    ours = load_lm(cfg, tmp_path / "c.safetensors")
    attrs = ConditionAttributes(text={"description": "very_good"}, tensor={})
    conditions = ref.condition_provider(ref.condition_provider.prepare([attrs]))
    gen = moshi_lm.LMGen(ref, use_sampling=False, condition_tensors=conditions)
    streamer = Streamer(ours, temp=0, temp_text=0, conditions={"description": "very_good"})
    rng = torch.Generator().manual_seed(3)
    with gen.streaming(1):
        for _ in range(8):
            codes = torch.randint(0, cfg["card"], (1, 4, 1), generator=rng)
            a, b = gen.step(codes), streamer.step(codes)
            assert (a is None and b is None) or torch.equal(a, b)


def test_checkpoint_key_errors_are_one_line(pair, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    cfg, _, _, path = pair
    state = load_file(str(path))
    broken = {
        "missing": {k: v for k, v in state.items() if k != "text_linear.weight"},
        "extra": {**state, "bogus.weight": torch.zeros(1)},
        "shape": {**state, "linears.0.weight": torch.zeros(3, 3)},
    }
    expected = {"missing": "text_linear.weight", "extra": "bogus.weight", "shape": "linears.0.weight"}
    for kind, sd in broken.items():
        save_file(sd, str(tmp_path / f"{kind}.safetensors"))
        with pytest.raises(CheckpointError) as err:
            load_lm(cfg, tmp_path / f"{kind}.safetensors")
        assert expected[kind] in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError):
        load_lm(cfg, tmp_path / "absent.safetensors")


def test_config_errors_are_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        load_lm("moshi-13b")
    assert "tiny" in str(err.value) and "moshi-7b" in str(err.value) and "\n" not in str(err.value)
    partial = {k: v for k, v in TINY.items() if k != "num_heads"}
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    with pytest.raises(ConfigError, match="'num_heads'"):
        load_lm(str(tmp_path / "partial.json"))
    with pytest.raises(ConfigError, match="'layer_scale'"):
        load_lm_config(dict(TINY, layer_scale=0.1))
    with pytest.raises(ConfigError, match="'delays'"):
        load_lm_config(dict(TINY, delays=[0, 1]))
    assert load_lm_config("moshi-7b").num_layers == 32
    assert load_lm_config(str(PRESETS_DIR / "moshi-2b.json")).dep_q == 16


def test_bf16_streams_valid_tokens() -> None:
    torch.manual_seed(0)
    lm = load_lm(SMALL, dtype=torch.bfloat16)
    assert lm.dtype == torch.bfloat16
    streamer = Streamer(lm, batch_size=2)
    assert streamer.temporal_caches[0].keys.dtype == torch.bfloat16
    for _ in range(6):
        out = streamer.step(torch.randint(0, SMALL["card"], (2, 4, 1)))
    assert out is not None and out.shape == (2, 5, 1)
    assert (out[:, 0] < SMALL["text_card"]).all() and (out[:, 1:] < SMALL["card"]).all() and (out >= 0).all()
    assert torch.isfinite(streamer.last_text_logits.float()).all()


def test_bf16_logits_stay_near_fp32_on_the_same_weights() -> None:
    """The same random weights in fp32 and bf16, the same input: the text logits of the first steps (no
    generated token fed back yet, so the inputs are the same) agree to bf16's precision. A broken bf16
    path (a wrong cast, a cache in the wrong dtype) is far outside."""
    torch.manual_seed(0)
    ref = load_lm(SMALL)
    torch.manual_seed(0)
    lm = load_lm(SMALL, dtype=torch.bfloat16)
    assert torch.equal(next(ref.parameters()).to(torch.bfloat16), next(lm.parameters()))
    a = Streamer(ref, temp=0, temp_text=0, batch_size=2)
    b = Streamer(lm, temp=0, temp_text=0, batch_size=2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        codes = torch.randint(0, SMALL["card"], (2, 4, 1), generator=gen)
        a.step(codes)
        b.step(codes)
        want, got = a.last_text_logits.float(), b.last_text_logits.float()
        assert (got - want).abs().max() < 0.1 * want.std(), (got - want).abs().max()


def test_checkpoint_dtype_and_pickle_are_one_line_errors(pair, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    cfg, _, _, path = pair
    state = load_file(str(path))
    save_file(
        {**state, "text_linear.weight": state["text_linear.weight"].to(torch.int32)}, str(tmp_path / "i.st")
    )
    with pytest.raises(CheckpointError) as err:
        load_lm(cfg, tmp_path / "i.st")  # loading it would only fail (or compute nonsense) at run time
    assert "'text_linear.weight' has dtype I32" in str(err.value) and "\n" not in str(err.value)
    torch.save(state, tmp_path / "lm.pt")
    with pytest.raises(CheckpointError) as err:
        load_lm(cfg, tmp_path / "lm.pt")
    assert "not a safetensors file" in str(err.value) and "\n" not in str(err.value)
    # bf16 weights are a floating type: accepted, and cast to the asked dtype
    save_file(
        {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()},
        str(tmp_path / "bf16.st"),
    )
    assert load_lm(cfg, tmp_path / "bf16.st").text_linear.weight.dtype == torch.float32

"""mod=C: exact at C = 1, a share C of tokens through each layer, no KV entry for skipped tokens, FLOPs."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from reference_model import FlagError, parse_flags
from reference_model.config import PRESETS_DIR
from reference_model.enhancements.mod import install, layer_linear_flops
from reference_model.lm import Streamer, load_lm

CONTEXT = 16  # a short context so the stream wraps the ring caches


def _tiny(context: int | None = None):
    config = json.loads((PRESETS_DIR / "tiny_lm.json").read_text())
    if context is not None:
        config["context"] = context
    torch.manual_seed(0)
    return load_lm(config)


def _codes(steps: int, batch: int = 1, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 2048, (batch, 8, 1), generator=gen) for _ in range(steps)]


def _stream(lm, codes, temp: float = 0.0):
    torch.manual_seed(0)
    streamer = Streamer(lm, temp=temp, temp_text=temp, batch_size=codes[0].shape[0])
    out, text_logits = [], []
    for c in codes:
        tokens = streamer.step(c)
        text_logits.append(streamer.last_text_logits)
        if tokens is not None:
            out.append(tokens)
    return torch.cat(out, dim=2), torch.stack(text_logits), streamer


def test_capacity_one_is_exact() -> None:
    torch.set_num_threads(1)
    codes = _codes(30)
    base_tokens, base_logits, _ = _stream(_tiny(), codes)
    lm = _tiny()
    stats = install(lm, 1.0)
    tokens, logits, _ = _stream(lm, codes)
    assert torch.equal(tokens, base_tokens) and torch.equal(logits, base_logits)
    assert stats.processed_share == [1.0] * len(lm.transformer.layers)
    assert stats.flops_saved_share == 0.0


def test_half_capacity_processes_half_and_writes_no_kv_for_skipped_tokens() -> None:
    torch.set_num_threads(1)
    lm = _tiny(CONTEXT)
    stats = install(lm, 0.5, steps=48)
    decisions: list[list[bool]] = [[] for _ in lm.transformer.layers]
    for i, layer in enumerate(lm.transformer.layers):
        # a skipped layer hands back its input object itself
        layer.register_forward_hook(lambda m, a, o, i=i: decisions[i].append(o is not a[0]))
    steps = 90
    tokens, _, streamer = _stream(lm, _codes(steps), temp=0.8)
    assert tokens.shape == (1, 9, steps - 1)
    for i, cache in enumerate(streamer.temporal_caches):
        share = stats.processed_share[i]
        assert 0.35 <= share <= 0.65, (i, share)
        assert stats.processed[i] == sum(decisions[i]) and stats.seen[i] == steps
        # the cache holds exactly the processed tokens of the last CONTEXT positions: nothing for the
        # skipped ones, and never more than the context (bounded memory)
        last = steps - 1
        held = cache.slot_positions[0]
        valid = ((held >= 0) & (held > last - CONTEXT)).sum().item()
        assert valid == sum(decisions[i][-CONTEXT:]) <= CONTEXT
        processed_positions = {p for p, d in enumerate(decisions[i]) if d and p > last - CONTEXT}
        assert set(held[held > last - CONTEXT].tolist()) == processed_positions
    assert 0.3 < stats.flops_saved_share < 0.7


def test_mixed_batch_equals_each_stream_alone() -> None:
    """Items of a batch route independently: the mixed path (run, then restore skipped items and empty
    their cache slot) gives each item what it gets alone."""
    torch.set_num_threads(1)
    lm = _tiny(CONTEXT)
    install(lm, 0.5, steps=48)
    a, b = _codes(24, seed=1), _codes(24, seed=2)
    alone_a, _, _ = _stream(lm, a)
    alone_b, _, _ = _stream(lm, b)
    both, _, _ = _stream(lm, [torch.cat([x, y]) for x, y in zip(a, b)])
    assert torch.equal(both[0], alone_a[0]) and torch.equal(both[1], alone_b[0])


def test_flops_counter() -> None:
    torch.set_num_threads(1)
    lm = _tiny(CONTEXT)
    stats = install(lm, 0.5, steps=8)
    layer = lm.transformer.layers[0]
    # the per-layer figure matches torch's own count of the layer's matmuls for one token
    streamer = Streamer(lm)
    step = streamer._temporal_positions()
    x = torch.randn(1, 1, lm.dim)
    layer.initial_window = torch.full((1,), -1e9)  # force "process" for this count
    with FlopCounterMode(display=False) as counter:
        layer(x, step, streamer.temporal_caches[0])
    counts = counter.get_flop_counts()["Global"]
    matmul = sum(v for op, v in counts.items() if "mm" in str(op))
    assert matmul == layer_linear_flops(layer) == 2 * lm.dim * (3 * lm.dim + lm.dim + 2 * 704 + 704)
    # the totals follow the counts
    stats.reset()
    stats.seen, stats.processed = [10, 10, 10, 10], [10, 5, 5, 0]
    per = layer_linear_flops(layer)
    assert stats.flops_full == 40 * per
    assert stats.flops_executed == 20 * per + 40 * 2 * lm.dim
    assert stats.flops_saved_share == pytest.approx(1 - (20 * per + 80 * lm.dim) / (40 * per))


@pytest.mark.parametrize("bad", ["mod=0", "mod=1.5", "mod=-0.2", "mod=half"])
def test_bad_capacity_is_one_line(bad: str) -> None:
    with pytest.raises(FlagError) as err:
        parse_flags(bad)
    assert "mod" in str(err.value) and "\n" not in str(err.value)


def test_routers_of_a_duplex_variant_are_fitted_on_speech_through_its_codec() -> None:
    """Built as the harness builds it, the trained tiny LM's routers are fitted on what the model hears
    (its codec's codes of speech), and over 60 frames of other speech through that codec they keep about
    a share C (bundled LM 06f7cbe4 at C = 0.5: 0.48-0.73 per layer, 0.58 over all)."""
    import numpy as np

    from reference_model import DuplexSpec
    from reference_model.build import build_duplex
    from reference_model.enhancements.mod import ModReport
    from reference_model.quant.calibrate import calibration_speech

    torch.set_num_threads(1)
    model = build_duplex(DuplexSpec(lm="tiny", codec="tiny", temp=0.0, temp_text=0.0, flags="mod=0.5"))
    stats = model.report().get(ModReport).stats
    assert stats.calibration.startswith("the codec's codes of") and stats.calibration.endswith("speech")
    # another stretch of speech than the calibration's 64 frames, streamed as the duplex loop does
    audio, _ = calibration_speech(model.sample_rate, 16.0, seed=7)
    audio = np.roll(audio, -int(8.0 * model.sample_rate))[: 60 * model.frame_size]
    fs = model.frame_size
    for i in range(60):
        model.step(torch.from_numpy(audio[i * fs : (i + 1) * fs].copy()).view(1, 1, fs))
    assert 0.35 <= sum(stats.processed) / sum(stats.seen) <= 0.65
    for i, share in enumerate(stats.processed_share):
        assert 0.2 <= share <= 0.8, (i, share)

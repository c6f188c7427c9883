"""The attention measurement on a small real LM: records per fill level and prefill block, eager and sdpa
both measured, flash skipped with its reason on CPU, caches filled and read through their own API."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reference_model.enhancements import FlagError
from tests.test_latency import make_ctx
from vemi_eval.measurements.attention import (
    fill_caches,
    fill_levels,
    layer_calls,
    measure_attention,
    read_filled,
)

ROOT = Path(__file__).resolve().parent.parent
HEADS, HEAD_DIM, LAYERS, CONTEXT = 4, 16, 2, 64
PARAMS = {
    "contexts": [8, 32, 100],  # 100 is capped at the model's context (64)
    "prefill_tokens": 16,
    "repeats": 3,
    "warmup": 1,
    "n_boot": 50,
}


def small_lm(backend: str):
    from reference_model import load_lm
    from reference_model.enhancements import attention

    cfg = json.loads((ROOT / "reference_model/presets/tiny_lm.json").read_text())
    cfg.update(dim=HEADS * HEAD_DIM, num_heads=HEADS, num_layers=LAYERS, context=CONTEXT, text_card=64)
    cfg.update(card=32, depformer_dim=32, depformer_dim_feedforward=64, depformer_num_heads=2)
    torch.manual_seed(0)
    lm = load_lm(cfg)
    attention.apply(lm, None, backend)  # the attn= flag's own apply: raises FlagError for flash on CPU
    return lm


def build_for(backend: str, with_streamer: bool = True):
    def build(batch_size: int = 1, fresh: bool = False):
        from reference_model import Streamer

        lm = small_lm(backend)
        streamer = Streamer(lm, batch_size=batch_size) if with_streamer else None
        return SimpleNamespace(lm=lm, streamer=streamer)

    return build


def records(recs, metric, **cond):
    return [r for r in recs if r.metric == metric and r.condition == cond]


@pytest.mark.parametrize("backend,with_streamer", [("eager", True), ("sdpa", False)])
def test_records_per_context_and_prefill_block(backend, with_streamer):
    torch.set_num_threads(1)
    ctx = make_ctx("attention", PARAMS, build_for(backend, with_streamer))
    recs = measure_attention(ctx)
    assert all(r.status == "ok" for r in recs), [(r.metric, r.reason) for r in recs if r.status != "ok"]
    decode = {n: records(recs, "attention_time", context=n) for n in (8, 32, 64)}
    prefill = {n: records(recs, "attention_time", context=n, query_len=16) for n in (8, 32, 64)}
    assert all(len(v) == 1 for v in decode.values())
    assert prefill[8] == [] and len(prefill[32]) == len(prefill[64]) == 1  # a 16-token block needs n >= 16
    assert len([r for r in recs if r.metric == "attention_time"]) == 5
    for rec in [decode[n][0] for n in decode] + [prefill[32][0], prefill[64][0]]:
        samples = rec.samples
        assert rec.unit == "ms" and rec.statistic == "median" and len(samples) == 3 == rec.n
        assert rec.value == pytest.approx(np.median(samples), abs=1e-5)  # samples kept to 10 ns
        assert rec.ci_low <= rec.value <= rec.ci_high
        assert rec.extra["backend"] == backend and rec.extra["layers"] == LAYERS
    assert decode[64][0].extra["requested_context"] == 100
    assert len(ctx.samples) == 5 * 3  # raw rows: one per repetition and case

    for cond in ({"context": 8}, {"context": 64}, {"context": 64, "query_len": 16}):
        (mem,) = records(recs, "attention_peak_memory", **cond)
        query_len = cond.get("query_len", 1)
        assert mem.unit == "bytes" and mem.value >= HEADS * query_len * HEAD_DIM * 4  # at least the output
    if backend == "eager":  # the materialised score matrix [H, T, n] in fp32 is inside the eager op's peak
        (mem,) = records(recs, "attention_peak_memory", context=64, query_len=16)
        assert mem.value >= HEADS * 16 * 64 * 4


def test_flash_on_cpu_is_skipped_with_the_reason():
    ctx = make_ctx("attention", PARAMS, build_for("flash"))
    recs = measure_attention(ctx)
    assert {r.metric for r in recs} == {"attention_time", "attention_peak_memory"}
    assert all(r.status == "skipped" and r.value is None and "CUDA" in r.reason for r in recs)


def test_other_build_errors_are_not_masked():
    def build(batch_size: int = 1, fresh: bool = False):
        raise FlagError("gqa=3 does not divide 4 heads")

    with pytest.raises(FlagError, match="gqa=3"):
        measure_attention(make_ctx("attention", PARAMS, build))


@pytest.mark.parametrize("compressed", [False, True])
def test_caches_are_filled_and_read_through_their_api(compressed):
    from reference_model.lm.kv_cache import RingKVCache
    from reference_model.quant.kv_cache import int8_window_cache_factory

    factory = int8_window_cache_factory(4) if compressed else RingKVCache
    caches = [factory(1, 2, 8, 20, device="cpu", dtype=torch.float32) for _ in range(2)]
    fill_caches(caches, 0, 5, seed=0, device=torch.device("cpu"), dtype=torch.float32)
    fill_caches(caches, 5, 12, seed=0, device=torch.device("cpu"), dtype=torch.float32)
    for cache in caches:
        assert cache.slot_positions[0, :12].tolist() == list(range(12))
        assert (cache.slot_positions[0, 12:] == -1).all()
        keys, values = read_filled(cache, 12, torch.device("cpu"))
        assert keys.shape == values.shape == (1, 2, 12, 8) and keys.dtype == torch.float32
        assert keys.abs().sum() > 0
    with pytest.raises(RuntimeError, match="slots"):
        read_filled(caches[0], 21, torch.device("cpu"))  # more than the capacity: the cache spans 20


def test_prefill_block_mask_is_causal_and_backends_agree():
    torch.manual_seed(0)
    attn = SimpleNamespace(num_heads=4, head_dim=8, backend="eager")
    kv = [(torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8))]  # GQA: 2 KV heads for 4 query heads
    (eager,) = layer_calls([attn], kv, query_len=4, seed=0)
    # query i is position 2 + i of 6: it sees keys 0..2 + i
    assert eager.mask.tolist() == [[j <= 2 + i for j in range(6)] for i in range(4)]
    (sdpa,) = layer_calls([SimpleNamespace(num_heads=4, head_dim=8, backend="sdpa")], kv, 4, seed=0)
    torch.testing.assert_close(eager(), sdpa(), atol=1e-5, rtol=1e-5)
    (decode,) = layer_calls([attn], kv, query_len=1, seed=0)
    assert decode.mask is None and decode.q.shape == (1, 4, 1, 8)


def test_fill_levels_cap_and_dedupe():
    assert fill_levels([3000, 125, 5000, 750], 3000) == [(125, 125), (750, 750), (3000, 3000)]
    assert fill_levels([100, 64], 64) == [(64, 100)]
    with pytest.raises(ValueError, match="contexts"):
        fill_levels([0], 64)


def test_attention_suite_loads_with_eager_as_baseline():
    from vemi_eval.measurements import load_all
    from vemi_eval.suites import load_suite

    suite = load_suite(str(ROOT / "suites" / "attention.toml"), known_kinds=load_all())
    assert suite.baseline.flags == ("attn=eager",)
    assert [v.flags for v in suite.variants[1:]] == [("attn=sdpa",), ("attn=flash",)]
    assert list(suite.kinds) == ["attention", "latency"]
    assert (
        suite.params_for("attention", quick=True)["repeats"] < suite.params_for("attention", False)["repeats"]
    )

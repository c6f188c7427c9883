"""The int8 KV cache with a full-precision recent window: fewer bytes, exact recent entries, close older
ones, correct per-item positions and resets, and LM logits close to the ring cache's."""

from __future__ import annotations

import copy

import torch

from reference_model.lm.kv_cache import RingKVCache, StepPositions
from reference_model.quant.kv_cache import Int8WindowKVCache


def _fill(cache: RingKVCache, kv: torch.Tensor, steps: int, per_item: bool = False) -> StepPositions:
    B = kv.shape[1]
    for t in range(steps):
        pos = torch.full((B,), t, dtype=torch.long)
        step = StepPositions(pos, common=None if per_item else t, span=min(t + 1, cache.capacity))
        cache.append(kv[0, :, :, t : t + 1], kv[1, :, :, t : t + 1], step)
    return step


def test_recent_window_exact_older_entries_close_and_fewer_bytes() -> None:
    torch.manual_seed(0)
    B, H, D, cap, W, T = 2, 3, 16, 10, 4, 14  # T > cap: the ring wraps
    kv = torch.randn(2, B, H, T, D)
    for per_item in (False, True):
        ring, small = RingKVCache(B, H, D, cap), Int8WindowKVCache(B, H, D, cap, window=W)
        step = _fill(ring, kv, T, per_item)
        _fill(small, kv, T, per_item)
        k_ref, v_ref, m_ref = ring.read(step)
        k, v, m = small.read(step)
        assert (m is None) == (m_ref is None) and (m is None or torch.equal(m, m_ref))
        recent = [p % cap for p in range(T - W, T)]
        assert torch.equal(k[:, :, recent], k_ref[:, :, recent]) and torch.equal(
            v[:, :, recent], v_ref[:, :, recent]
        )
        step_size = k_ref.abs().amax(-1, keepdim=True) / 127
        assert ((k - k_ref).abs() <= step_size / 2 + 1e-6).all()
        assert small.nbytes < ring.nbytes  # (here the window is 40% of a tiny capacity)


def test_reset_of_one_item_keeps_the_other() -> None:
    torch.manual_seed(1)
    B, H, D, cap = 2, 2, 8, 6
    kv = torch.randn(2, B, H, 9, D)
    ring, small = RingKVCache(B, H, D, cap), Int8WindowKVCache(B, H, D, cap, window=3)
    for cache in (ring, small):
        _fill(cache, kv, 5)
        cache.reset(torch.tensor([True, False]))
    # Item 0 restarts at position 0 while item 1 goes on at 5.
    pos = torch.tensor([0, 5])
    step = StepPositions(pos, common=None, span=6)
    for cache in (ring, small):
        cache.append(kv[0, :, :, 5:6], kv[1, :, :, 5:6], step)
    k_ref, _, m_ref = ring.read(step)
    k, _, m = small.read(step)
    assert torch.equal(m, m_ref)
    # Every slot that may be attended holds the same data up to int8 rounding, exact in the window.
    diff = (k - k_ref).abs().amax(-1)[:, 0]  # [B, span]
    assert diff[m_ref[:, 0, 0]].max() < 0.05
    assert diff[1, 5] == 0 and diff[0, 0] == 0  # the newest entries come from the window


def test_lm_with_compressed_cache_streams_with_fewer_bytes_and_close_logits() -> None:
    torch.set_num_threads(1)
    from reference_model.enhancements.kv_compress import apply
    from reference_model.lm import Streamer, load_lm
    from reference_model.quant.evaluate import greedy_agreement

    torch.manual_seed(0)
    lm = load_lm("tiny")
    small = copy.deepcopy(lm)
    apply(small, None, ("int8", 4))
    ring_bytes = Streamer(lm).kv_cache_bytes
    small_bytes = Streamer(small).kv_cache_bytes
    assert small_bytes < 0.35 * ring_bytes, (small_bytes, ring_bytes)
    agree = greedy_agreement(lm, small, steps=12)
    assert agree.max_text_logit_diff < 0.2 and agree.text >= 0.9 and agree.audio >= 0.9, agree

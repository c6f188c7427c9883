"""Serving: scheduling policies (static vs continuous batching) and per-conversation exactness."""

from __future__ import annotations

import pytest
import torch

from vemi_eval.serving_sim import (
    ContinuousBatching,
    Conversation,
    StaticBatching,
    poisson_workload,
    serve,
    synthetic_user_audio,
)

PERIOD = 0.08


class CountingDuplex:
    """A stand-in with per-slot state: each slot's token is a running sum of its own inputs, so a slot that
    is not reset (or that sees a neighbour's audio) gives different tokens."""

    def __init__(self, batch_size: int, *, honour_reset: bool = True) -> None:
        self.batch_size = batch_size
        self.frame_rate = 12.5
        self.frame_size = 16
        self.sample_rate = 200
        self.dep_q = 1
        self.max_delay = 1
        self.device = torch.device("cpu")
        self.honour_reset = honour_reset
        self.state = torch.zeros(batch_size, dtype=torch.long)
        self.count = torch.zeros(batch_size, dtype=torch.long)

    def encode_user(self, pcm: torch.Tensor) -> torch.Tensor:
        return (pcm.abs().sum(dim=(1, 2)) * 1000).long().view(-1, 1, 1) % 97

    def lm_step(self, codes: torch.Tensor) -> torch.Tensor | None:
        self.state += codes[:, 0, 0]
        self.count += 1
        out = torch.stack([self.state % 1009, self.count], dim=1)[:, :, None]
        out[self.count <= self.max_delay] = -2
        return None if bool((self.count <= self.max_delay).all()) else out

    def decode_model(self, tokens: torch.Tensor) -> torch.Tensor:
        assert int(tokens.min()) >= 0
        return torch.zeros(tokens.shape[0], 1, self.frame_size)

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            mask = torch.ones(self.batch_size, dtype=torch.bool)
        if self.honour_reset:
            self.state[mask] = 0
            self.count[mask] = 0

    def sync(self) -> None:
        pass


def fixed_clock(seconds: float):
    return lambda wall, live: seconds


def audio(c: Conversation) -> torch.Tensor:
    return synthetic_user_audio(c, frame_size=16, sample_rate=200, seed=3)


def test_workload_is_seeded_and_bounded() -> None:
    a = poisson_workload(50, 2.0, median_frames=20, min_frames=5, max_frames=40, seed=1)
    b = poisson_workload(50, 2.0, median_frames=20, min_frames=5, max_frames=40, seed=1)
    assert a == b and a != poisson_workload(50, 2.0, median_frames=20, min_frames=5, max_frames=40, seed=2)
    assert all(5 <= c.n_frames <= 40 for c in a)
    assert a[0].arrival_s == 0 and all(x.arrival_s <= y.arrival_s for x, y in zip(a, a[1:]))
    with pytest.raises(ValueError, match="arrival_rate"):
        poisson_workload(5, 0.0)


def test_continuous_joins_at_the_next_frame_boundary() -> None:
    convs = [Conversation(0, 0.0, 10), Conversation(1, 0.1, 4)]
    res = serve(CountingDuplex(2), convs, ContinuousBatching(), user_audio=audio, step_time=fixed_clock(0.01))
    first = {f.conversation: f for f in res.frames if f.index == 0}
    # conversation 1's first frame is complete at 0.18 s; conversation 0's batch ticks at 0.08 k
    assert first[1].start_s == pytest.approx(0.24)
    assert first[1].slot == 1
    # a live stream never runs ahead of its user: frame k starts no earlier than it is ready
    assert all(f.start_s >= f.ready_s - 1e-9 for f in res.frames)
    assert len(res.frames) == 14


def test_static_waits_for_a_full_batch_or_the_timeout_and_for_the_longest_member() -> None:
    convs = [Conversation(0, 0.0, 10), Conversation(1, 0.1, 4), Conversation(2, 0.2, 4)]
    res = serve(
        CountingDuplex(2), convs, StaticBatching(timeout_s=5.0), user_audio=audio, step_time=fixed_clock(0.01)
    )
    first = {f.conversation: f for f in res.frames if f.index == 0}
    # the first batch starts when the second member's first frame is ready (0.18 s), not before
    assert first[0].start_s == pytest.approx(0.18) and first[1].start_s == pytest.approx(0.18)
    # the third waits for the whole first batch (10 frames of conversation 0), then its own timeout
    end_of_first = max(f.done_s for f in res.frames if f.conversation == 0)
    assert first[2].start_s >= 0.28 + 5.0 - 1e-9 and first[2].start_s >= end_of_first
    # slots of members that ended early were computed idle
    assert res.summary()["slot_utilisation"] < 1.0


def test_continuous_beats_static_on_queueing_under_load() -> None:
    convs = poisson_workload(12, 6.0, median_frames=12, min_frames=4, max_frames=30, seed=0)
    kw = dict(user_audio=audio, step_time=fixed_clock(0.03))
    cont = serve(CountingDuplex(4), convs, ContinuousBatching(), **kw).summary()
    stat = serve(CountingDuplex(4), convs, StaticBatching(timeout_s=0.5), **kw).summary()
    assert cont["ttff_p50_s"] < stat["ttff_p50_s"]
    assert cont["goodput"] > stat["goodput"]
    assert cont["slot_utilisation"] > stat["slot_utilisation"]
    assert cont["n_frames"] == stat["n_frames"] == sum(c.n_frames for c in convs)


def _tokens_alone(conv: Conversation, make) -> torch.Tensor:
    alone = Conversation(conv.id, 0.0, conv.n_frames)
    return serve(
        make(),
        [alone],
        ContinuousBatching(),
        user_audio=audio,
        record_tokens=True,
        step_time=fixed_clock(0.01),
    ).tokens[conv.id]


def test_streams_are_independent_only_with_a_real_per_item_reset() -> None:
    convs = poisson_workload(8, 8.0, median_frames=10, min_frames=4, max_frames=20, seed=5)
    for honour, expect_equal in ((True, True), (False, False)):
        res = serve(
            CountingDuplex(3, honour_reset=honour),
            convs,
            ContinuousBatching(),
            user_audio=audio,
            record_tokens=True,
            step_time=fixed_clock(0.05),
        )
        joined_late = [f.conversation for f in res.frames if f.index == 0 and f.start_s > 0.1]
        assert joined_late
        same = all(
            torch.equal(res.tokens[c], _tokens_alone(convs[c], lambda: CountingDuplex(3)))
            for c in joined_late
        )
        assert same == expect_equal


# --- the real model: per-item reset and batch rows must keep conversations independent -----------------


def _greedy_tiny(batch_size: int):
    from reference_model import DuplexSpec, build_duplex

    torch.set_num_threads(1)
    return build_duplex(
        DuplexSpec(lm="tiny", codec="tiny", batch_size=batch_size, temp=0.0, temp_text=0.0, seed=0)
    )


def test_greedy_tokens_do_not_depend_on_batch_neighbours_or_join_time() -> None:
    convs = [
        Conversation(0, 0.0, 12),
        Conversation(1, 0.05, 5),
        Conversation(2, 0.3, 9),
        Conversation(3, 0.45, 8),
    ]
    duplex = _greedy_tiny(2)
    user = lambda c: synthetic_user_audio(c, seed=11)  # noqa: E731
    res = serve(
        duplex, convs, ContinuousBatching(), user_audio=user, record_tokens=True, step_time=fixed_clock(0.05)
    )
    first = {f.conversation: f for f in res.frames if f.index == 0}
    # 2 and 3 join mid-way, each in a slot another conversation used and freed
    assert first[2].slot == first[1].slot and first[3].slot == first[0].slot
    for c in convs:
        alone = serve(
            _greedy_tiny(1),
            [Conversation(c.id, 0.0, c.n_frames)],
            ContinuousBatching(),
            user_audio=user,
            record_tokens=True,
            step_time=fixed_clock(0.05),
        )
        got, ref = res.tokens[c.id], alone.tokens[c.id]
        assert got.shape == (c.n_frames, 1 + duplex.dep_q)
        assert int((ref >= 0).all(dim=1).sum()) == c.n_frames - duplex.max_delay  # tokens after the delay
        assert torch.equal(got, ref), f"conversation {c.id}: tokens differ when served beside others"

"""Serving many live full-duplex conversations on ONE batched model (a pool of slots): the workload
(Poisson arrivals, synthetic user speech) and a discrete-event simulation of the server, for the
``serving`` measurement. Harness code: it drives the model only through its public interface
(``reset(mask)``, ``encode_user``, ``lm_step``, ``decode_model``, ``sync``).

Two scheduling policies, compared by the ``serving`` measurement:

* :class:`StaticBatching`: a batch starts only when ``capacity`` conversations are waiting (or the oldest
  has waited ``timeout_s``) and runs until its LONGEST member ends; members that end early leave their slot
  idle (still computed) and newcomers wait for the whole batch to finish.
* :class:`ContinuousBatching` (vLLM-style, seed doc 5.2; the model's ``continuous-batching`` flag, a
  serving policy that changes none of the model's arithmetic, selects it): conversations join and
  leave at every frame boundary. A newcomer takes a free slot, the slot is reset with
  ``duplex.reset(mask)``, and a finished conversation frees its slot at once.

Time is a discrete-event simulation driven by the MEASURED wall time of each batched step, so the same
code serves any device. Every conversation is a live stream: its user frame ``k`` is complete (``ready``)
at ``arrival + (k + 1) * frame_period``, and the batch advances in lockstep, one frame per live slot per
step, starting when every live slot has its next frame (a live server cannot run ahead of its users).
A frame is on time (goodput) when it is delivered within ``deadline_s`` (80 ms) of being ready.

The model must make streams independent: a reset slot behaves exactly like a fresh stream and batch rows
never mix. With greedy decoding a conversation's tokens are then the same whatever ran beside it; the tests
check that, and a broken per-item reset fails them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

FRAME_DEADLINE_S = 0.080


# --- workload -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    id: int
    arrival_s: float
    n_frames: int


def poisson_workload(
    n_conversations: int,
    arrival_rate: float,
    *,
    median_frames: int = 40,
    min_frames: int = 8,
    max_frames: int = 120,
    length_sigma: float = 0.6,
    seed: int = 0,
) -> list[Conversation]:
    """Poisson arrivals (``arrival_rate`` conversations per second) with log-normal lengths in frames."""
    if n_conversations < 1:
        raise ValueError(f"n_conversations must be >= 1, got {n_conversations}")
    if not arrival_rate > 0:
        raise ValueError(f"arrival_rate must be > 0 conversations/s, got {arrival_rate}")
    if not 1 <= min_frames <= median_frames <= max_frames:
        raise ValueError(
            f"need 1 <= min_frames <= median_frames <= max_frames, got {min_frames}, "
            f"{median_frames}, {max_frames}"
        )
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / arrival_rate, n_conversations))
    arrivals -= arrivals[0]  # the first conversation opens the run
    lengths = np.exp(rng.normal(math.log(median_frames), length_sigma, n_conversations))
    lengths = np.clip(np.round(lengths), min_frames, max_frames).astype(int)
    return [Conversation(i, float(a), int(n)) for i, (a, n) in enumerate(zip(arrivals, lengths))]


def synthetic_user_audio(
    conversation: Conversation, *, frame_size: int = 1920, sample_rate: int = 24000, seed: int = 0
) -> torch.Tensor:
    """A seeded speech-like user stream [n_frames, 1, frame_size]: voiced syllables with a wandering pitch,
    separated by pauses with a low noise floor (so that the codec sees both speech and silence)."""
    rng = np.random.default_rng([seed, conversation.id])
    n = conversation.n_frames * frame_size
    t = np.arange(n) / sample_rate
    out = 1e-3 * rng.standard_normal(n)
    pos = int(rng.integers(0, frame_size))
    while pos < n:
        length = int(rng.uniform(0.12, 0.35) * sample_rate)
        end = min(n, pos + length)
        seg = t[pos:end] - t[pos]
        f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * seg))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        voiced = sum(np.sin(h * phase) / h for h in range(1, 8))
        env = np.sin(np.pi * np.linspace(0, 1, end - pos)) ** 2
        out[pos:end] += 0.2 * env * voiced
        pos = end + int(rng.uniform(0.05, 0.4) * sample_rate)
    return torch.from_numpy(out.astype(np.float32)).view(conversation.n_frames, 1, frame_size)


# --- policies -------------------------------------------------------------------------------------------


class _Waiting(Protocol):
    id: int
    ready_s: float


class StaticBatching:
    """Fill a batch, run it until its longest member ends, then take the next batch."""

    name = "static"
    frees_on_finish = False  # a finished member keeps its slot (idle, still computed) until the batch ends

    def __init__(self, timeout_s: float = 1.0) -> None:
        if timeout_s < 0:
            raise ValueError(f"static batching timeout must be >= 0 s, got {timeout_s}")
        self.timeout_s = timeout_s

    def admit(self, now: float, waiting: Sequence[_Waiting], free: int, capacity: int, busy: bool) -> int:
        """How many of the waiting conversations (FIFO) join now."""
        if busy or not waiting:
            return 0
        if len(waiting) >= capacity or now - waiting[0].ready_s >= self.timeout_s - 1e-12:
            return min(len(waiting), free)
        return 0

    def wakeup(self, waiting: Sequence[_Waiting]) -> float:
        """When an idle server must look again even if nothing arrives (the batch timeout)."""
        return waiting[0].ready_s + self.timeout_s if waiting else math.inf


class ContinuousBatching:
    """Join at the next frame boundary when a slot is free; leave as soon as the conversation ends."""

    name = "continuous"
    frees_on_finish = True

    def admit(self, now: float, waiting: Sequence[_Waiting], free: int, capacity: int, busy: bool) -> int:
        return min(len(waiting), free)

    def wakeup(self, waiting: Sequence[_Waiting]) -> float:
        return -math.inf if waiting else math.inf


def make_policy(name: str, *, static_timeout_s: float = 1.0) -> StaticBatching | ContinuousBatching:
    if name == "static":
        return StaticBatching(static_timeout_s)
    if name == "continuous":
        return ContinuousBatching()
    raise ValueError(f"unknown serving policy {name!r} (known: static, continuous)")


# --- records --------------------------------------------------------------------------------------------


@dataclass
class FrameRecord:
    conversation: int
    index: int
    slot: int
    ready_s: float  # the user's frame is complete
    start_s: float  # the batched step that carried it began
    done_s: float  # ... and ended: the model's frame is out

    @property
    def latency_s(self) -> float:
        return self.done_s - self.ready_s


@dataclass
class StepRecord:
    start_s: float
    wall_s: float  # measured (or given by ``step_time``)
    live: int  # slots carrying a live conversation
    joined: int  # slots reset for a newcomer before this step


@dataclass
class ServingResult:
    policy: str
    capacity: int
    deadline_s: float
    conversations: list[Conversation]
    frames: list[FrameRecord]
    steps: list[StepRecord]
    tokens: dict[int, torch.Tensor] = field(default_factory=dict)  # id -> [n_frames, 1 + dep_q]

    def summary(self) -> dict[str, float]:
        """The serving metrics (seconds unless named otherwise)."""
        lat = np.array([f.latency_s for f in self.frames])
        first = {f.conversation: f for f in self.frames if f.index == 0}
        ttff = np.array([first[c.id].done_s - first[c.id].ready_s for c in self.conversations])
        queue = np.array([first[c.id].start_s - first[c.id].ready_s for c in self.conversations])
        wall = np.array([s.wall_s for s in self.steps])
        t0 = min(c.arrival_s for c in self.conversations)
        span = max(f.done_s for f in self.frames) - t0
        computed = self.capacity * len(self.steps)
        return {
            "throughput_fps": len(self.frames) / span,
            "frame_latency_p50_s": float(np.percentile(lat, 50)),
            "frame_latency_p99_s": float(np.percentile(lat, 99)),
            "ttff_p50_s": float(np.percentile(ttff, 50)),
            "ttff_p99_s": float(np.percentile(ttff, 99)),
            "queue_delay_mean_s": float(queue.mean()),
            "goodput": float(np.mean(lat <= self.deadline_s + 1e-12)),
            "slot_utilisation": sum(s.live for s in self.steps) / computed,
            "step_wall_p50_s": float(np.percentile(wall, 50)),
            "step_wall_p99_s": float(np.percentile(wall, 99)),
            "n_frames": float(len(self.frames)),
            "n_steps": float(len(self.steps)),
            "span_s": span,
        }


# --- the simulation -------------------------------------------------------------------------------------


@dataclass
class _Stream:
    conv: Conversation
    audio: torch.Tensor  # [n_frames, 1, frame_size]
    ready_s: float  # first frame ready (waiting-queue key)
    next_index: int = 0
    finished: bool = False

    @property
    def id(self) -> int:
        return self.conv.id

    def next_ready(self, period: float) -> float:
        return self.conv.arrival_s + (self.next_index + 1) * period


UserAudio = Callable[[Conversation], torch.Tensor]
StepTime = Callable[[float, int], float]  # (measured wall seconds, live slots) -> seconds to charge


def serve(
    duplex: Any,
    conversations: Sequence[Conversation],
    policy: StaticBatching | ContinuousBatching,
    *,
    user_audio: UserAudio | None = None,
    deadline_s: float = FRAME_DEADLINE_S,
    record_tokens: bool = False,
    step_time: StepTime | None = None,
    progress: Callable[[str], None] | None = None,
) -> ServingResult:
    """Run ``conversations`` through ``duplex`` (capacity = its batch size) under ``policy``.

    ``step_time`` replaces the measured wall time of a step (tests use it for a deterministic clock; the
    measurement never does). Every conversation is served to its end.
    """
    if not conversations:
        raise ValueError("serve() needs at least one conversation")
    capacity = int(duplex.batch_size)
    period = 1.0 / float(duplex.frame_rate)
    frame_size = int(duplex.frame_size)
    if user_audio is None:

        def user_audio(c: Conversation) -> torch.Tensor:
            return synthetic_user_audio(c, frame_size=frame_size, sample_rate=int(duplex.sample_rate))

    pending = deque(sorted(conversations, key=lambda c: (c.arrival_s, c.id)))
    waiting: deque[_Stream] = deque()
    slots: list[_Stream | None] = [None] * capacity
    frames: list[FrameRecord] = []
    steps: list[StepRecord] = []
    tokens: dict[int, list[torch.Tensor]] = {}
    now = 0.0
    duplex.reset()

    def arrive_until(t: float) -> None:
        # a conversation queues once its first frame is complete: nothing can be computed before
        while pending and pending[0].arrival_s + period <= t + 1e-12:
            c = pending.popleft()
            audio = user_audio(c)
            if tuple(audio.shape) != (c.n_frames, 1, frame_size):
                raise ValueError(
                    f"user audio of conversation {c.id} has shape {tuple(audio.shape)}, "
                    f"expected {(c.n_frames, 1, frame_size)}"
                )
            waiting.append(_Stream(c, audio, c.arrival_s + period))

    while pending or waiting or any(s is not None for s in slots):
        live = [s for s in slots if s is not None and not s.finished]
        start = max([now] + [s.next_ready(period) for s in live])
        arrive_until(start)
        free = [i for i, s in enumerate(slots) if s is None]
        busy = any(s is not None for s in slots)
        n_join = policy.admit(start, waiting, len(free), capacity, busy)
        if not live and n_join == 0:
            # idle: sleep until the next arrival's first frame or the policy's timeout
            nxt = min(pending[0].arrival_s + period if pending else math.inf, policy.wakeup(waiting))
            if math.isinf(nxt):
                raise RuntimeError("serving simulation stalled (policy never admits the waiting queue)")
            now = max(now, nxt)
            continue
        joined = []
        for slot in free[:n_join]:
            s = waiting.popleft()
            slots[slot] = s
            joined.append(slot)
            start = max(start, s.next_ready(period))
        live_slots = [i for i, s in enumerate(slots) if s is not None and not s.finished]

        pcm = torch.zeros(capacity, 1, frame_size)
        for i in live_slots:
            s = slots[i]
            pcm[i] = s.audio[s.next_index]
        mask = torch.zeros(capacity, dtype=torch.bool)
        mask[joined] = True
        out, wall = _timed_step(duplex, pcm, mask if joined else None)
        charged = step_time(wall, len(live_slots)) if step_time is not None else wall
        done = start + charged
        steps.append(StepRecord(start, charged, len(live_slots), len(joined)))

        for i in live_slots:
            s = slots[i]
            frames.append(FrameRecord(s.id, s.next_index, i, s.next_ready(period), start, done))
            if record_tokens:
                tokens.setdefault(s.id, []).append(out[i].clone())
            s.next_index += 1
            if s.next_index == s.conv.n_frames:
                s.finished = True
                if policy.frees_on_finish:
                    slots[i] = None
        if not policy.frees_on_finish and all(s is None or s.finished for s in slots):
            slots = [None] * capacity  # the static batch is over: all its slots free at once
        now = done
        if progress is not None and len(steps) % 100 == 0:
            progress(f"serving[{policy.name}] step {len(steps)}: t={now:.2f}s, {len(frames)} frames")

    return ServingResult(
        policy.name,
        capacity,
        deadline_s,
        list(conversations),
        frames,
        steps,
        {k: torch.stack(v) for k, v in tokens.items()},
    )


def _timed_step(
    duplex: Any, pcm: torch.Tensor, reset_mask: torch.Tensor | None
) -> tuple[torch.Tensor, float]:
    """One batched frame for every slot (live or idle), timed from the reset to the decoded PCM.

    Returns the tokens [B, 1 + dep_q] (-2 where a slot has not produced audio yet) and the wall seconds.
    Slots still inside their first ``max_delay`` frames have no tokens; they are decoded as code 0 so that
    every slot's codec decoder sees the same sequence whatever its neighbours do (a batched decoder cannot
    skip a row), and their PCM is discarded.
    """
    device = duplex.device
    pcm = pcm.to(device)  # the model casts PCM to its codec's dtype
    duplex.sync()
    t0 = time.perf_counter()
    if reset_mask is not None:
        duplex.reset(reset_mask.to(device))
    tokens = duplex.lm_step(duplex.encode_user(pcm))
    if tokens is None:
        tokens = torch.full((pcm.shape[0], 1 + duplex.dep_q, 1), -2, dtype=torch.long, device=device)
    duplex.decode_model(tokens.clamp_min(0))
    duplex.sync()
    wall = time.perf_counter() - t0
    return tokens[:, :, 0].cpu(), wall

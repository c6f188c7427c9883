"""The training loop both trainers run (the codec's, training/codec.py, and the LM's, training/lm.py).

What is the same for both lives here once: the budget (wall time, or the steps' CPU time with
``--clock cpu``, and/or a number of steps), the learning-rate schedule over the budget's fraction, the
checkpoint cadence and the final save, the resume from a state (refused under another recipe: one error
type for both) or, for a trainer that commits its weights at every checkpoint, from those weights and
their sidecar, and the provenance every sidecar records. What a step computes (the objective) stays in
the trainer: ``codec_losses.py``, ``lm_objective.py``.

The state file's layout (training/state.py) does not change: the loop writes ``recipe_digest``, ``step``
and ``elapsed_s`` into its metadata, the trainer adds its own keys beside them.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .interrupt import StopRequest, end_of_loop
from .state import (
    RecipeMismatchError,
    file_sha256,
    git_commit,
    load_training_state,
    save_training_state,
)

Clock = Literal["wall", "cpu"]
CLOCKS: tuple[Clock, ...] = ("wall", "cpu")


@dataclass(frozen=True)
class Budget:
    """What ends a training: ``seconds`` of the ``clock`` (None: no time limit), and/or ``max_steps``
    (None: no step limit). With steps, the schedule follows the steps, so runs are reproducible."""

    seconds: float | None
    max_steps: int | None = None
    clock: Clock = "wall"

    def __post_init__(self) -> None:
        if self.seconds is None and self.max_steps is None:
            raise ValueError("give minutes (a time budget) or max_steps")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")


@dataclass(frozen=True)
class Schedule:
    """Linear warmup over ``warmup_steps``, then a cosine over the budget's fraction down to ``floor``.

    The two trainers reach their floor differently, and a resumed training must keep its own curve:
    ``"clamp"`` (codec) is max(floor, cosine), ``"blend"`` (LM) is floor + (1 - floor) * cosine."""

    peak: float
    warmup_steps: int
    floor: float
    floor_kind: Literal["clamp", "blend"]

    def lr(self, step: int, fraction: float) -> float:
        warm = min(1.0, (step + 1) / max(1, self.warmup_steps))
        cos = 0.5 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))
        if self.floor_kind == "clamp":
            return self.peak * warm * max(self.floor, cos)
        return self.peak * warm * (self.floor + (1 - self.floor) * cos)


@dataclass(frozen=True)
class Provenance:
    """Who trained: the run's settings and the code it ran (read at its start: a commit made during a
    long run would otherwise be credited with it)."""

    seed: int
    threads: int
    device: str
    commit_at_start: str

    @classmethod
    def at_start(cls, seed: int, threads: int, device: str) -> Provenance:
        return cls(seed, threads, device, git_commit())

    def run_fields(self) -> dict[str, Any]:
        return {"seed": self.seed, "threads": self.threads, "device": self.device}

    def code_fields(self) -> dict[str, Any]:
        return {
            "git_commit": git_commit(),
            "git_commit_at_start": self.commit_at_start,
            "torch": torch.__version__,
            "platform": platform.platform(),
        }


def resume_state(
    path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, digest: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Load ``path`` into ``model`` and ``opt``; RecipeMismatchError (before any tensor is loaded) when it
    was written under another recipe digest. Returns the state's metadata and extra tensors."""

    def same_recipe(meta: dict[str, Any]) -> None:
        if meta.get("recipe_digest") != digest:
            raise RecipeMismatchError(
                f"{path} holds a run with another recipe ({meta.get('recipe_digest')} != {digest}): pass "
                "the same options, or --fresh to start over"
            )

    return load_training_state(path, model, opt, same_recipe)


def unfinished_run(weights: Path, produced_by: str, digest: str) -> dict[str, Any] | None:
    """The sidecar of an unfinished run of the recipe ``digest`` whose weights are at ``weights`` (a
    trainer that writes its outputs at every checkpoint, ``"final": false``, the recipe's digest under
    ``recipe.digest``), or None. Committed, they let a machine without the state go on."""
    sidecar = weights.with_suffix(".json")
    if not (weights.is_file() and sidecar.is_file()):
        return None
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(info, dict):
        return None
    same = info.get("produced_by") == produced_by and (info.get("recipe") or {}).get("digest") == digest
    return info if same and info.get("final") is False and int(info.get("steps", 0)) > 0 else None


def resumed_without_state(weights: Path, step: int) -> dict[str, Any]:
    """What the sidecar says of a run that went on from its committed weights (``unfinished_run``)."""
    return {
        "weights": weights.name,
        "sha256": file_sha256(weights),
        "at_step": step,
        "optimizer": "fresh (its moments were not saved with the weights)",
        "sampler": f"numpy default_rng([seed, {step}])",
    }


@dataclass(frozen=True)
class Checkpoint:
    """What a save writes, and how often: ``model`` and ``opt`` into the state file at ``path``, under the
    recipe's ``digest``, with the trainer's own ``meta`` (JSON) and ``tensors`` beside the loop's."""

    path: Path
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    digest: str
    meta: Callable[[], dict[str, Any]]
    tensors: Callable[[], dict[str, torch.Tensor]]
    every_s: float


class TrainingLoop:
    """Steps until the budget is spent (or a signal asks to stop), at the schedule's learning rate; saves
    the state every ``checkpoint.every_s`` and at the end. A resumed training starts at ``step``, with
    ``elapsed_s`` wall and ``cpu_s`` CPU seconds already spent.

    ``run`` takes the trainer's ``one_step`` (one optimiser step at the loop's current ``step``),
    ``after_step`` (logging, evaluations: it sees the new step count, before a checkpoint) and
    ``on_checkpoint`` (what else a checkpoint writes)."""

    def __init__(
        self,
        budget: Budget,
        schedule: Schedule,
        checkpoint: Checkpoint,
        stop: StopRequest | None = None,
        *,
        step: int = 0,
        elapsed_s: float = 0.0,
        cpu_s: float = 0.0,
    ) -> None:
        self.budget, self.schedule, self.checkpoint, self.stop = budget, schedule, checkpoint, stop
        self.step, self.first_step = step, step
        self.cpu_s = cpu_s  # CPU seconds of the training steps, over resumes
        self.t_start = time.time() - elapsed_s
        self.t_run = time.time()  # this process's steps start (reset by ``run``)
        self.steps_s = 0.0  # wall seconds of this process's steps, as of the last one
        self.lr = schedule.lr(step, 0.0)

    def elapsed(self) -> float:
        """Wall seconds since the training began, over resumes."""
        return time.time() - self.t_start

    def run_seconds(self) -> float:
        """Wall seconds of this process's steps (a resume counts its own)."""
        return time.time() - self.t_run

    def spent(self) -> float:
        return self.cpu_s if self.budget.clock == "cpu" else self.elapsed()

    def fraction(self) -> float:
        """How far through the budget: steps when they are the limit, else the clock's seconds."""
        b = self.budget
        if b.max_steps is not None:
            return self.step / b.max_steps
        return self.spent() / b.seconds  # type: ignore[operator]  # a Budget has one or the other

    def done(self) -> bool:
        if self.stop is not None and self.stop():  # a signal: save and stop (training/interrupt.py)
            return True
        b = self.budget
        if b.max_steps is not None and self.step >= b.max_steps:
            return True
        return b.seconds is not None and self.spent() >= b.seconds

    def save(self) -> None:
        c = self.checkpoint
        meta = {"recipe_digest": c.digest, "step": self.step, "elapsed_s": self.elapsed(), **c.meta()}
        save_training_state(c.path, c.model, c.opt, meta, c.tensors())

    def run(
        self,
        one_step: Callable[[], None],
        after_step: Callable[[], None] = lambda: None,
        on_checkpoint: Callable[[], None] = lambda: None,
        stop_after_steps: int | None = None,
    ) -> bool:
        """Train until done; True when the budget ended it (the state saved; a signal's stop raises
        TrainingInterrupted), False when ``stop_after_steps`` cut it short as a kill would (tests)."""
        last_ckpt = self.t_run = time.time()
        while not self.done():
            c0 = time.process_time()
            self.lr = self.schedule.lr(self.step, self.fraction())
            for group in self.checkpoint.opt.param_groups:
                group["lr"] = self.lr
            one_step()
            self.step += 1
            self.cpu_s += time.process_time() - c0
            self.steps_s = time.time() - self.t_run
            after_step()
            if time.time() - last_ckpt > self.checkpoint.every_s:
                self.save()
                on_checkpoint()
                last_ckpt = time.time()
            if stop_after_steps is not None and self.step >= stop_after_steps:
                self.save()
                return False
        self.save()
        end_of_loop(self.stop, self.checkpoint.path, self.step)
        return True

"""What a training arm cost and whether it had converged, from its checkpoint's sidecar.

A paired training experiment says little when its arms stopped while their losses were still falling: any
difference between them is then mostly which one was further along. An arm counts as converged when no
logged loss fell by more than ``CONVERGED_FALL_SHARE`` of its value over the last ``LAST_SHARE`` of the
steps (from the last logged point at or before 80% of the steps to the last one). The trainers log the
training loss only; it stands in for a held-out loss, and the record says so (``loss_basis``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONVERGED_FALL_SHARE = 0.05  # a loss that still fell by more than this over the last 20%: not converged
LAST_SHARE = 0.2
TRAINING_LOSS = "training loss (no held-out loss history is logged)"
_NOT_LOSSES = {"step", "t", "t_s"}


@dataclass(frozen=True)
class Convergence:
    converged: bool
    fall_share: float  # the largest relative fall of a logged loss over the last 20% of the steps
    loss: str  # which loss fell the most
    from_step: int
    to_step: int


@dataclass(frozen=True)
class TrainingBudget:
    """One arm's training, as its sidecar recorded it (None: not recorded)."""

    steps: int | None
    minutes: float | None  # wall-clock minutes of the process that trained it
    device: str | None
    threads: int | None
    convergence: Convergence | None
    loss_basis: str = TRAINING_LOSS

    def to_dict(self) -> dict[str, Any]:
        c = self.convergence
        return {
            "steps": self.steps,
            "minutes": self.minutes,
            "device": self.device,
            "threads": self.threads,
            "converged": None if c is None else c.converged,
            "fall_share_last_20pct": None if c is None else c.fall_share,
            "fall_loss": None if c is None else c.loss,
            "fall_steps": None if c is None else [c.from_step, c.to_step],
            "loss_basis": self.loss_basis,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TrainingBudget:
        """The inverse of ``to_dict`` (what results.json keeps of a sidecar)."""
        conv = None
        if doc.get("converged") is not None and doc.get("fall_share_last_20pct") is not None:
            a, b = (doc.get("fall_steps") or [0, 0])[:2]
            conv = Convergence(
                bool(doc["converged"]), float(doc["fall_share_last_20pct"]), str(doc.get("fall_loss")), a, b
            )
        return cls(
            _int(doc.get("steps")),
            _float(doc.get("minutes")),
            doc.get("device"),
            _int(doc.get("threads")),
            conv,
            str(doc.get("loss_basis") or TRAINING_LOSS),
        )


def convergence(history: Sequence[Mapping[str, Any]], steps: int | None) -> Convergence | None:
    """Whether every logged loss stopped falling over the last 20% of ``steps``; None when the history
    has no point at or before 80% of the steps and a later one (too short to say)."""
    points = [h for h in history if isinstance(h, Mapping) and isinstance(h.get("step"), (int, float))]
    if not points:
        return None
    total = int(steps) if steps else int(points[-1]["step"])
    cut = (1.0 - LAST_SHARE) * total
    before = [h for h in points if h["step"] <= cut]
    last = points[-1]
    if not before or before[-1] is last:
        return None
    start = before[-1]
    worst, worst_name = -math.inf, ""
    for name, a in start.items():
        b = last.get(name)
        if name in _NOT_LOSSES or not _number(a) or not _number(b) or a == 0:
            continue
        fall = (float(a) - float(b)) / abs(float(a))
        if fall > worst:
            worst, worst_name = fall, name
    if not worst_name:
        return None
    return Convergence(
        worst <= CONVERGED_FALL_SHARE, worst, worst_name, int(start["step"]), int(last["step"])
    )


def budget_from_sidecar(doc: Mapping[str, Any]) -> TrainingBudget:
    """The budget of a trainer's sidecar (vemi_eval/training: LM ``loss_history``; a codec sidecar keeps
    no loss history, so its convergence is unknown)."""
    steps = _int(doc.get("steps"))
    wall = _float(doc.get("wall_time_s"))
    history = doc.get("loss_history")
    conv = convergence(history, steps) if isinstance(history, list) else None
    return TrainingBudget(
        steps, None if wall is None else wall / 60.0, doc.get("device"), _int(doc.get("threads")), conv
    )


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _int(x: Any) -> int | None:
    return int(x) if _number(x) else None


def _float(x: Any) -> float | None:
    return float(x) if _number(x) else None

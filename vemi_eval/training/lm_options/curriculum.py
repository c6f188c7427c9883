"""Option ``latency-curriculum`` (enhancement 4.3): the response gap of the training data shrinks toward
the target on a schedule.

The dialogue corpus renders the same training sessions at several answer gaps (same voices, words and
pauses; only the answers move, vemi_eval.data.dialogue ``answer_gap_s``), each tokenised once and cached.
Training progress (the share of the step budget, or of the time budget) is cut into ``stages`` equal
parts; stage k samples its crops from the sessions at gap

    g_k = start_gap_s - (start_gap_s - target_gap_s) * k / (stages - 1)

so the gap falls linearly from ``start_gap_s`` and the last stage trains at the target. The baseline of
the paired experiment trains at the target gap from the first step, for the same steps.

At full scale on a user's data the same schedule applies to any corpus that can be rendered at several
gaps: pass one token folder per stage with ``--option-arg latency-curriculum.stage_data=DIR1,DIR2,...``
(largest gap first, the last the target).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .base import LMOption, OptionContext, OptionError


def stage_gaps(start_gap_s: float, target_gap_s: float, stages: int) -> list[float]:
    """The gap of every stage, largest first, the last one the target (monotone non-increasing)."""
    if stages == 1:
        return [target_gap_s]
    # to the millisecond (the corpus caches a gap by its milliseconds); the last one exactly the target
    gaps = [round(start_gap_s - (start_gap_s - target_gap_s) * k / (stages - 1), 3) for k in range(stages)]
    return gaps[:-1] + [target_gap_s]


def stage_at(progress: float, stages: int) -> int:
    """The stage a point of training is in: ``stages`` equal shares of progress in [0, 1]."""
    return min(stages - 1, max(0, int(progress * stages)))


@dataclass
class LatencyCurriculum(LMOption):
    name: ClassVar[str] = "latency-curriculum"
    start_gap_s: float = 0.96  # three times the corpus's gap
    target_gap_s: float = 0.32  # the corpus's gap (vemi_eval.data.dialogue.ANSWER_GAP_S)
    stages: int = 3
    stage_data: tuple[str, ...] = ()  # a user's token folders, one per stage (instead of the corpus)

    def __post_init__(self) -> None:
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if self.start_gap_s < self.target_gap_s:
            raise ValueError(
                f"start_gap_s ({self.start_gap_s}) must be >= target_gap_s ({self.target_gap_s}): "
                "the gap shrinks toward the target"
            )
        if self.stage_data and len(self.stage_data) != self.stages:
            raise ValueError(f"stage_data names {len(self.stage_data)} folders for {self.stages} stages")

    @property
    def gaps(self) -> list[float]:
        return stage_gaps(self.start_gap_s, self.target_gap_s, self.stages)

    def setup(self, ctx: OptionContext) -> None:
        from ..lm_objective import load_token_folder

        if self.stage_data:
            folders = list(self.stage_data)
        elif ctx.corpus is not None:
            from vemi_eval.data import dialogue

            folders = [
                str(
                    dialogue.tokenised_split(
                        ctx.corpus.split,
                        ctx.corpus.codec_checkpoint,
                        limit=ctx.corpus.train_sessions,
                        answer_gap_s=g,
                        log=ctx.log,
                    )
                )
                for g in self.gaps
            ]
        else:
            raise OptionError(
                "latency-curriculum: with --data, give the stages' token folders "
                "(--option-arg latency-curriculum.stage_data=DIR1,DIR2,...)"
            )
        self.stage_sets = [load_token_folder(f, ctx.cfg.n_q + 1) for f in folders]
        self.steps_per_stage = [0] * self.stages
        ctx.log(f"latency-curriculum: gaps {[round(g, 3) for g in self.gaps]} s over {self.stages} stages")

    def recipe(self) -> dict[str, Any]:
        return {**super().recipe(), "stage_data_sha256": [d.sha256 for d in self.stage_sets]}

    def grids(self, step: int, progress: float, grids: list[torch.Tensor]) -> list[torch.Tensor]:
        k = stage_at(progress, self.stages)
        self.steps_per_stage[k] += 1
        return self.stage_sets[k].grids

    def report(self) -> dict[str, Any]:
        return {
            "gaps_s": self.gaps,
            "stage_data": [d.source for d in self.stage_sets],
            "stage_data_sha256": [d.sha256 for d in self.stage_sets],
            "steps_per_stage_this_process": self.steps_per_stage,
        }

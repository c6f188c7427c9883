"""Option ``distill`` (enhancement 4.1): knowledge distillation from a larger teacher LM.

The teacher runs teacher-forced on the same batch (same delays, same depth frames), without gradients;
the student's loss becomes

    (1 - alpha) * hard-label loss + alpha * T^2 * (KL_text + KL_audio)

with KL(teacher || student) of the temperature-``T`` softmaxes (Hinton et al. 2015; T^2 keeps the
gradient scale of the soft term independent of T), each a mean over the positions the hard loss uses,
weighted as it weights them (padding text targets at ``text_padding_weight``, the semantic codebook at
``first_codebook_weight``). Teacher and student must share the token spaces (text_card, card, n_q,
dep_q, delays); their sizes may differ.

At full scale: ``vemi-eval train lm --config reference_model/presets/moshi-2b-student.json --data DIR
--option distill --teacher moshi-7b.safetensors:moshi-7b --device cuda`` (the released 7B as teacher;
the student preset is the 2B's temporal transformer, dim 2560 x 24 layers, with the 7B's token spaces,
delays and depth transformer: 2.9B parameters. The ``moshi-2b`` preset itself cannot be distilled from
the 7B by logits: its text vocabulary is 48000 against 32000 and it models 16 codebooks, not 8). The
teacher's forward costs about a third of a 7B training step (no backward), so a GPU with room for both
is assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.nn import functional as F

from .base import LMOption, OptionContext, OptionError

if TYPE_CHECKING:
    from reference_model.lm.model import LMModel

    from ..lm_objective import LossParts

SHARED_FIELDS = ("text_card", "card", "n_q", "dep_q", "delays", "existing_text_padding_id")


def parse_teacher(spec: str, default_config: Any) -> tuple[Path, Any]:
    """``CHECKPOINT[:CONFIG]`` -> (checkpoint path, config). A Windows drive letter is not a separator."""
    ckpt, config = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head and not (len(head) == 1 and head.isalpha()):
        ckpt, config = head, tail
    path = Path(ckpt)
    if not path.is_file():
        raise OptionError(f"distill: teacher checkpoint not found: {path}")
    return path, config if config else default_config


def check_token_spaces(teacher: Any, student: Any) -> None:
    """Logits can be compared only over the same vocabularies, streams and delays."""
    for key in SHARED_FIELDS:
        if getattr(teacher, key) != getattr(student, key):
            raise OptionError(
                f"distill: the teacher's {key} ({getattr(teacher, key)}) differs from the student's "
                f"({getattr(student, key)}); they must share token spaces and delays"
            )


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) per position (summed over the vocabulary)."""
    s = F.log_softmax(student.float() / temperature, dim=-1)
    t = F.log_softmax(teacher.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp(min=1e-9)


@dataclass
class Distill(LMOption):
    name: ClassVar[str] = "distill"
    teacher: str = ""  # CHECKPOINT[:CONFIG]
    temperature: float = 2.0
    alpha: float = 0.5  # share of the soft (teacher) term in the loss
    teacher_sha256: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ValueError("needs --teacher CHECKPOINT[:CONFIG]")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")

    def setup(self, ctx: OptionContext) -> None:
        from reference_model.config import load_lm_config
        from reference_model.lm import load_lm

        from ..state import file_sha256

        path, config = parse_teacher(self.teacher, ctx.cfg)
        tcfg = load_lm_config(config)
        check_token_spaces(tcfg, ctx.cfg)
        self.teacher_sha256 = file_sha256(path)
        self.model = load_lm(tcfg, path, device=ctx.device).eval().requires_grad_(False)
        self.teacher_params = sum(p.numel() for p in self.model.parameters())
        self.soft: list[tuple[float, float]] = []
        ctx.log(f"distill: teacher {path} ({self.teacher_params:,} parameters), T={self.temperature}")

    def recipe(self) -> dict[str, Any]:
        # the teacher's bytes, not only its path, decide what the student learns
        return {**super().recipe(), "teacher_sha256": self.teacher_sha256}

    def loss(
        self, lm: LMModel, batch: torch.Tensor, frames: torch.Tensor | None, parts: LossParts
    ) -> LossParts:
        from ..lm_objective import teacher_forced_logits

        with torch.no_grad():
            t_text, t_audio, _ = teacher_forced_logits(self.model, batch, frames)
        kl_text = weighted_mean(soft_kl(parts.text_logits, t_text, self.temperature), parts.text_weight)
        kl_audio = weighted_mean(soft_kl(parts.audio_logits, t_audio, self.temperature), parts.audio_weight)
        soft = (kl_text + kl_audio) * self.temperature**2
        self.soft.append((float(kl_text.detach()), float(kl_audio.detach())))
        parts.total = (1.0 - self.alpha) * parts.total + self.alpha * soft
        return parts

    def report(self) -> dict[str, Any]:
        tail = self.soft[-50:] or [(float("nan"), float("nan"))]
        return {
            "teacher": self.teacher,
            "teacher_sha256": self.teacher_sha256,
            "teacher_parameters": getattr(self, "teacher_params", None),
            "kl_text_mean_last_50": sum(a for a, _ in tail) / len(tail),
            "kl_audio_mean_last_50": sum(b for _, b in tail) / len(tail),
        }

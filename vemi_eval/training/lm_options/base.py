"""The base of every LM training option and what the trainer hands it: the option modules of this
package import it, and the package's ``__init__`` (the registry of options) imports them, never the
reverse."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from vemi_eval.errors import DataError

from ..lm_objective import LossParts, TokenData

if TYPE_CHECKING:
    from reference_model.config import LMConfig
    from reference_model.lm.model import LMModel


class OptionError(DataError):
    """An unknown option, a bad option argument, or options that cannot combine (one line; exit 2)."""


@dataclass(frozen=True)
class CorpusRef:
    """The dialogue corpus the trainer tokenised (None in the context when a user's --data is used)."""

    codec_checkpoint: str | None
    train_sessions: int | None
    split: str = "train"


@dataclass
class OptionContext:
    cfg: LMConfig
    train: TokenData
    corpus: CorpusRef | None
    device: str
    seed: int
    log: Callable[[str], None] = print
    init_from: Path | None = None  # the warm start's weights (a preference option's reference model)
    out_path: Path | None = None  # where the LM goes (an option that ships a file beside it)


@dataclass
class LMOption:
    """Base: no hook changes anything. Subclasses are dataclasses whose fields are their arguments."""

    name: ClassVar[str] = ""
    rng: np.random.Generator = field(init=False, repr=False, compare=False)
    # Part of the bundled recipe itself (the default user-channel noise), not an enhancement asked for:
    # recorded in the recipe, left out of the sidecar's "trained_with" (what the registry attributes).
    in_base_recipe: bool = field(default=False, init=False, repr=False)

    def seed(self, seed: int) -> None:
        h = hashlib.sha256(f"{seed}/{self.name}".encode()).digest()
        self.rng = np.random.default_rng(int.from_bytes(h[:8], "little"))

    def setup(self, ctx: OptionContext) -> None:
        pass

    def grids(self, step: int, progress: float, grids: list[torch.Tensor]) -> list[torch.Tensor]:
        return grids

    def transform(
        self, batch: torch.Tensor, plan: list[tuple[int, int]], grids: list[torch.Tensor]
    ) -> torch.Tensor:
        return batch

    def loss(
        self, lm: LMModel, batch: torch.Tensor, frames: torch.Tensor | None, parts: LossParts
    ) -> LossParts:
        return parts

    def objective(self, lm: LMModel, batch: torch.Tensor, frames: torch.Tensor | None) -> LossParts | None:
        return None

    def trainable(self) -> torch.nn.Module | None:
        return None

    def input_offset(self, lm: LMModel, batch: torch.Tensor) -> torch.Tensor | None:
        return None

    def export(self, lm: LMModel, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return tensors

    def recipe(self) -> dict[str, Any]:
        base = {"base_recipe": True} if self.in_base_recipe else {}  # absent otherwise: digests unchanged
        return {"name": self.name, **base, **{f.name: _plain(getattr(self, f.name)) for f in _args(self)}}

    def report(self) -> dict[str, Any]:
        return {}


def _args(opt: LMOption) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(opt) if f.init]


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v

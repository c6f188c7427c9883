"""``continuous-batching`` (seed doc 5.2): serve conversations with vLLM-style continuous batching.

A scheduling choice, not a change of the model's arithmetic: the flag marks the variant so that the
serving simulation (``reference_model.serving``) lets conversations join and leave the running batch at
every frame boundary (a freed slot is reset with ``duplex.reset(mask)``) instead of static batching. Only
the ``serving`` measurement reads it; other measurements of such a variant equal the baseline's.
"""

from __future__ import annotations

import torch

from . import FlagError, FlagSpec, register


def _parse(value: str | None) -> bool:
    if value not in (None, "", "true", "1", "on"):
        raise ValueError("continuous-batching takes no value")
    return True


register(
    FlagSpec(
        name="continuous-batching",
        module=__name__.rsplit(".", 1)[1],
        stage="runtime",
        summary="serving: conversations join/leave the running batch at frame boundaries (vs static batches)",
        parse=_parse,
    )
)


def apply(duplex, value: bool) -> None:
    # Continuous batching rests on a per-conversation reset that leaves the other slots untouched.
    if not callable(getattr(duplex, "reset", None)):
        raise FlagError("continuous-batching needs a model with a per-conversation reset(mask)")
    mask = torch.zeros(duplex.batch_size, dtype=torch.bool)
    duplex.reset(mask)  # an all-False mask must be accepted (and change nothing)
    duplex.serving_policy = "continuous"

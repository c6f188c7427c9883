"""``continuous-batching`` (seed doc 5.2): a SERVING POLICY, not a change of the model.

It changes no arithmetic of the model: every frame of every conversation is computed exactly as the
baseline computes it. It marks the variant so that the harness's serving measurement schedules many
conversations on one batched model vLLM-style (a conversation joins the running batch at any frame
boundary, its slot reset with ``duplex.reset(mask)``, and leaves as soon as it ends) instead of static
batching. What the model contributes, and what ``apply`` checks, is the per-conversation reset that
leaves the other slots untouched. Only the serving measurement reads the flag (from the report); any
other measurement of such a variant equals the baseline's.
"""

from __future__ import annotations

import torch

from ..report import ServingPolicyReport
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
        summary="serving policy (no change to the model's arithmetic): the harness's serving measurement "
        "lets conversations join/leave the running batch at frame boundaries instead of static batches",
        parse=_parse,
        order=10,
    )
)


def apply(duplex, value: bool) -> ServingPolicyReport:
    if not callable(getattr(duplex, "reset", None)):
        raise FlagError("continuous-batching needs a model with a per-conversation reset(mask)")
    duplex.reset(torch.zeros(duplex.batch_size, dtype=torch.bool))  # an all-False mask must be accepted
    return ServingPolicyReport(policy="continuous")

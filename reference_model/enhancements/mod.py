"""``mod=C``: Mixture of Depths on the temporal transformer, capacity C in (0, 1].

The routing itself lives in :mod:`reference_model.mod`; counters on ``lm.mod_stats``.
"""

from __future__ import annotations

from . import FlagError, FlagSpec, register


def _parse(value: str | None) -> float:
    c = float(value)  # ValueError -> FlagError naming the flag, in parse_flags
    if not 0.0 < c <= 1.0:
        raise ValueError("capacity C must be in (0, 1]")
    return c


register(
    FlagSpec(
        name="mod",
        module=__name__.rsplit(".", 1)[1],
        stage="model",
        summary=(
            "Mixture of Depths: per temporal layer, a linear router on the residual stream lets only a share "
            "C of tokens through the layer (the rest skip it and write no KV entry). The checkpoint has no "
            "routers: they are FITTED (ridge regression, seeded, on the model's own stream) to predict the "
            "norm of each layer's update, with a threshold set so a share C of calibration tokens is "
            "processed; not trained end to end, so quality loss is measured, not assumed. mod=1 is exact"
        ),
        parse=_parse,
        default="0.5",
    )
)


def apply(lm, codec, capacity: float) -> None:
    from ..mod import install

    try:
        install(lm, capacity)
    except ValueError as exc:
        raise FlagError(f"mod={capacity}: {exc}") from None

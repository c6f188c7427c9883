"""``kv-compress=int8[:W]``: the temporal transformer's KV cache stores entries older than the last W
frames (default 16) as int8 with one scale per head and token; the recent window stays full precision."""

from __future__ import annotations

from ..report import KVCompressReport
from . import FlagSpec, register


def parse(value: str | None) -> tuple[str, int]:
    from reference_model.quant.kv_cache import DEFAULT_WINDOW

    kind, _, window = (value or "int8").strip().lower().partition(":")
    if kind != "int8":
        raise ValueError("kind must be int8 (optionally int8:<window frames>)")
    if not window:
        return kind, DEFAULT_WINDOW
    if not window.isdigit() or int(window) < 1:
        raise ValueError("the window must be a positive number of frames, e.g. int8:16")
    return kind, int(window)


register(
    FlagSpec(
        name="kv-compress",
        module=__name__.rsplit(".", 1)[1],
        stage="model",
        summary="temporal KV cache: int8 (per head and token scales) beyond a full-precision recent window",
        parse=parse,
        default="int8",
        group="kv cache",
        order=40,
    )
)


def apply(lm, codec, value: tuple[str, int]) -> KVCompressReport:
    from reference_model.quant.kv_cache import int8_window_cache_factory

    kind, window = value
    factory = int8_window_cache_factory(window)
    for attn in lm.transformer.attentions():
        attn.cache_factory = factory
    return KVCompressReport(kind=kind, window=window)

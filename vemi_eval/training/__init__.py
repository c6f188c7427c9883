"""Training recipes for the reference model's small presets (CPU, from the harness's own data)."""

from __future__ import annotations

__all__ = ["train_codec"]


def __getattr__(name: str):
    # Lazy: importing the harness must not pull torch training code.
    if name == "train_codec":
        from .codec import train_codec

        return train_codec
    raise AttributeError(name)

"""Harness data: the synthetic espeak-ng corpus, bring-your-own data, noise, and audio loading."""

from __future__ import annotations


class DataError(Exception):
    """Data that cannot be used (nothing usable left, a missing folder...). One-line message; CLI exit 2."""


__all__ = ["DataError"]

"""Harness data: the synthetic espeak-ng corpus (corpus.py), bring-your-own data (byo.py), noise
(noise.py) and audio loading/resampling/validation (audio.py).

``DataError`` is the harness's user-facing data error (one line; the CLI maps it to exit code 2).
"""

from __future__ import annotations

from ..errors import DataError

__all__ = ["DataError"]

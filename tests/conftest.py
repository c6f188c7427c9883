"""Session-wide test settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The corpora the tests synthesise go to a folder of this session, never into the user's cache
    (``$VEMI_CACHE``, default ~/.cache/vemi-eval), so a test can neither use nor spoil what a user built."""
    before = os.environ.get("VEMI_CACHE")
    os.environ["VEMI_CACHE"] = str(tmp_path_factory.mktemp("vemi-cache"))
    yield
    if before is None:
        os.environ.pop("VEMI_CACHE", None)
    else:
        os.environ["VEMI_CACHE"] = before

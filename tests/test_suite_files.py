"""Every suite the command line lists loads and validates: a typo in a shipped suite file is found here, not
by the user who runs it."""

from __future__ import annotations

import pytest

from vemi_eval import measurements
from vemi_eval.suites import available_suites, load_suite


@pytest.mark.parametrize("name", sorted(available_suites()))
def test_each_shipped_suite_loads(name: str) -> None:
    suite = load_suite(name, known_kinds=measurements.load_all())
    assert suite.variants  # the first is the baseline, whatever its name

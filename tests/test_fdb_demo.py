"""The demo set cut from held-out sessions is in FDB's layout and reads back through the FDB reader."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

from vemi_eval.data import DataError
from vemi_eval.data.dialogue import Word
from vemi_eval.data.duplex_layouts import PAUSE, SMOOTH_TURN, load_duplex_data
from vemi_eval.data.fdb_demo import write_fdb_demo

SR = 24000


def session() -> NS:
    """Two turns at known samples; the second pauses before its number."""
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(6 * SR)).astype(np.float32)
    t1 = NS(
        words=(Word("what", SR, SR + 4000), Word("seven", 30000, 40000)),
        pause=None,
        answer=Word("eight", 48000, 54000),
        expected="eight",
        user_end=40000,
    )
    t2 = NS(
        words=(Word("so", 80000, 84000), Word("three", 110000, 120000)),
        pause=(90000, 108000),
        answer=Word("four", 128000, 134000),
        expected="four",
        user_end=120000,
    )
    return NS(turns=[t1, t2], n_samples=audio.size, user_audio=lambda: audio)


def test_a_demo_set_reads_back_as_fdb(tmp_path):
    counts = write_fdb_demo(tmp_path / "demo", [session()])
    assert counts == {"turn_taking": 2, "pause": 1}
    data = load_duplex_data(tmp_path / "demo")
    by = {s.id: s for s in data.samples}
    assert sorted(by) == ["pause/1", "turn_taking/1", "turn_taking/2"] and not data.skipped
    lead = int(0.3 * SR)
    first = by["turn_taking/1"]
    assert first.events[0].task == SMOOTH_TURN
    assert first.events[0].start == pytest.approx((40000 - (SR - lead)) / SR, abs=1e-4)
    assert first.reference == "eight" and first.n_native == 80000 - (SR - lead)  # to the next turn
    p = by["pause/1"]
    assert p.events[0].task == PAUSE
    assert p.events[0].start == pytest.approx((90000 - (80000 - lead)) / SR, abs=1e-4)
    assert p.n_native == 120000 + int(0.08 * SR) - (80000 - lead)  # stops after the user's last word
    with pytest.raises(DataError, match="not empty"):
        write_fdb_demo(tmp_path / "demo", [session()])  # nothing written before is replaced

"""A report leads with what its runs measured (issue 34): a suite without flags (dialogue) opens with its
headline figures and accuracy against SNR, its SNR rows sort as numbers, and a first frame of seconds
does not flatten the frame-time plot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from tests.test_report import TagChecker
from vemi_eval.report import build_report, plots

REPO = Path(__file__).resolve().parent.parent


def test_dialogue_report_leads_with_its_headline_figures(tmp_path: Path) -> None:
    run = tmp_path / "dialogue-tiny"
    shutil.copytree(REPO / "reports" / "dialogue-tiny", run)
    text = build_report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    checker = TagChecker()
    checker.feed(text)
    assert not checker.errors and not checker.stack
    lead = text[text.index('id="lead"') : text.index('id="runs"')]
    # the answer first: accuracy 0.802 with its interval, before the list of what was not measured
    answer = lead.index("0.8021 fraction")
    assert answer < lead.index("18 of 18 enhancements not measured by this suite")
    assert "response" in lead and "0.3558 s" in lead
    assert re.search(r'<img alt="answer_accuracy against snr_db" src="data:image/png;base64,', lead)
    # the suite's table sorts its SNR ladder as numbers, the labelled rung after them
    rows = re.findall(
        r"<td>answer_accuracy<span class='small'>[^<]*</span></td><td>snr_db=([^,]+), source=text", text
    )
    assert rows == ["5", "10", "20", "clean"]


def test_a_slow_first_frame_stays_off_the_scale(monkeypatch) -> None:
    seen = {}

    def keep(fig, dpi: int = 96) -> str:
        ax = fig.axes[0]
        seen["ylim"], seen["title"] = ax.get_ylim(), ax.get_title(loc="left")
        return "data:image/png;base64,"

    monkeypatch.setattr(plots, "to_data_uri", keep)
    frames = np.arange(40, dtype=float)
    total = np.full(40, 30.0)
    total[0] = 18000.0  # a compile
    measured = frames >= 3
    plots.frame_series(
        {"compile": (frames, total, measured), "baseline": (frames, total / 1.1, measured)}, 80.0
    )
    assert seen["ylim"][1] < 200  # the scale follows the measured frames and the budget
    assert "compile frame 0: 18000 ms" in seen["title"]

"""`vemi-eval matrix --markdown`: claim beside measurement, intervals, counted extras, the runs named."""

from __future__ import annotations

from vemi_eval.report.matrix_markdown import matrix_markdown


def _m(value, lo=None, hi=None, run="reports/a/results.json"):
    return {"run": run, "measured": value, "ci_low": lo, "ci_high": hi}


def test_rows_for_measured_claims_only():
    rows = [
        {
            "id": "5.1",
            "title": "Quant | 4-bit",
            "claims": [
                {
                    "text": "2x faster",
                    "claimed_low": 0.5,
                    "claimed_high": 0.5,
                    "measurements": [_m(0.6433, 0.634, 0.6546), _m(0.9, run="reports/b"), _m(1.0), _m(1.1)],
                    "verdict": "falls short",
                },
                {
                    "text": "not run",
                    "claimed_low": 0.2,
                    "claimed_high": 0.3,
                    "measurements": [],
                    "verdict": "-",
                },
            ],
        }
    ]
    lines = matrix_markdown(rows).splitlines()
    assert lines[0].startswith("| id | enhancement | claim | claimed |")
    assert len(lines) == 3  # header, rule, one measured claim
    assert lines[2] == (
        "| 5.1 | Quant \\| 4-bit | 2x faster | 0.5 | 0.643 [0.634, 0.655]; 0.9 [-, -] (+2) "
        "| falls short | a, b |"
    )

"""`vemi-eval matrix --markdown`: one line per claim and context, claim beside measurement, intervals,
counted extras, the MDE and the runs named."""

from __future__ import annotations

from vemi_eval.report.matrix_markdown import matrix_markdown


def _m(value, lo=None, hi=None, run="reports/a/results.json", mde=None, basis=""):
    return {"run": run, "measured": value, "ci_low": lo, "ci_high": hi, "mde": mde, "mde_basis": basis}


def test_one_line_per_measured_claim_and_context():
    cpu = [_m(0.6433, 0.634, 0.6546, mde=0.107, basis="A/A control"), _m(0.9, run="reports/b"), _m(1.0)]
    gpu = [_m(0.3, 0.29, 0.31, run="reports/c", mde=0.02, basis="A/A control")]
    rows = [
        {
            "id": "5.1",
            "title": "Quant | 4-bit",
            "claims": [
                {
                    "text": "2x faster",
                    "claimed_low": 0.5,
                    "claimed_high": 0.5,
                    "rows": [
                        {"context": "cpu; tiny", "measurements": cpu, "verdict": "falls short", "mde": 0.107},
                        {"context": "cuda; 7b", "measurements": gpu, "verdict": "meets", "mde": 0.02},
                    ],
                },
                {"text": "not run", "claimed_low": 0.2, "claimed_high": 0.3, "rows": []},
            ],
        }
    ]
    lines = matrix_markdown(rows).splitlines()
    assert lines[0].startswith("| id | enhancement | claim | claimed | context |")
    assert len(lines) == 4  # header, rule, one line per context of the measured claim
    assert lines[2] == (
        "| 5.1 | Quant \\| 4-bit | 2x faster | 0.5 | cpu; tiny | 0.643 [0.634, 0.655]; 0.9 [-, -] (+1) "
        "| 11% (A/A control) | falls short | a, b |"
    )
    gpu_line = "| 5.1 | Quant \\| 4-bit | 2x faster | 0.5 | cuda; 7b | 0.3 [0.29, 0.31] | 2% (A/A control) "
    assert lines[3] == gpu_line + "| meets | c |"

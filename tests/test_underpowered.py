"""A statistic conditioned on an event (a latency given a take-over) with fewer events than min_samples is
underpowered: shown with n and the threshold, never a verdict, and it does not make the run INVALID while
the unconditioned records (the rate of those events) are valid; a run with nothing but underpowered or
failed records is still not VALID. One definition (``aggregate.apply_validity``), read by the summary, the
report, the gate, the claims and the replicates' pooling."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_runner_helpers import FAKE_KINDS, fake_build, fakes  # noqa: F401
from vemi_eval import measurements
from vemi_eval.aggregate import apply_validity
from vemi_eval.claim_verdicts import NO_VERDICT, ClaimBar, Evidence, judge
from vemi_eval.errors import EXIT_INVALID, EXIT_OK
from vemi_eval.gate import NOT_GATED, REGRESSION, compare
from vemi_eval.recorded_run import run_suite
from vemi_eval.records import INVALID, OK, UNDERPOWERED, MetricRecord
from vemi_eval.replicates import pool_replicates
from vemi_eval.report.view import cell
from vemi_eval.run_summary import status_lines
from vemi_eval.runner import RunOptions

RULES = {"min_samples": 4}


def latency(n: int, conditional_on: str = "take-overs") -> MetricRecord:
    vals = [0.2 + 0.1 * i for i in range(n)]
    return MetricRecord(
        "s", "base", "response_latency_s", sum(vals) / n, "s", n, samples=vals, conditional_on=conditional_on
    )


def test_too_few_conditional_events_is_underpowered_not_invalid() -> None:
    rec = latency(1)
    apply_validity(rec, RULES)
    assert rec.status == UNDERPOWERED and rec.value == pytest.approx(0.2)  # shown, with its value
    assert rec.reason == "underpowered: n=1 take-overs < min_samples=4, no verdict"
    plain = latency(1, conditional_on="")  # an unconditioned statistic on too few samples breaks the rule
    apply_validity(plain, RULES)
    assert plain.status == INVALID and plain.reason == "n=1 < min_samples=4"
    enough = latency(4)
    apply_validity(enough, RULES)
    assert enough.status == OK and enough.reason == ""
    short = latency(1)  # another rule broken as well: that one makes it invalid
    short.extra["frames"] = 3
    apply_validity(short, {**RULES, "min_frames": 50})
    assert short.status == INVALID


# --- a whole run ------------------------------------------------------------------------------------------
SUITE = """\
[suite]
name = "events"
description = "a rate over samples and a latency given the events it counts"

[validity]
min_samples = 4

[turns]
mode = "few"
"""


def _measure_turns(ctx):
    """8 samples, the turn taken on ``taken`` of them: the rate over all 8, the latency over the taken."""
    mode = ctx.params.get("mode", "few")
    taken = {"few": 1, "many": 6, "none_valid": 1}[mode]
    rate = MetricRecord(ctx.suite, ctx.variant.name, "turn_over_rate", taken / 8, "fraction", 8)
    if mode == "none_valid":
        rate = MetricRecord(
            ctx.suite, ctx.variant.name, "turn_over_rate", None, "", 0, status="failed", reason="ASR failed"
        )
    lat = [0.3 + 0.05 * i for i in range(taken)]
    rec = MetricRecord(
        ctx.suite,
        ctx.variant.name,
        "response_latency_s",
        sum(lat) / taken,
        "s",
        taken,
        samples=lat,
        statistic="mean",
        conditional_on="take-overs",
        reason=f"take-overs: {taken} of 8",
    )
    return [rate, rec]


TURNS = measurements.MeasurementSpec("turns", _measure_turns, params={"mode": "few"})


def _run(tmp_path: Path, monkeypatch, mode: str):
    monkeypatch.setattr(measurements, "load_all", lambda: {**FAKE_KINDS, "turns": TURNS})
    suite = tmp_path / "events.toml"
    suite.write_text(SUITE.replace('"few"', f'"{mode}"'), encoding="utf-8")
    opts = RunOptions(
        suite=str(suite), out=str(tmp_path / "run"), report=False, progress=False, history=False,
        build_fn=fake_build,
    )  # fmt: skip
    return run_suite(opts, echo=lambda m: None)


@pytest.mark.usefixtures("fakes")
def test_a_run_with_a_valid_rate_and_an_underpowered_latency_is_valid(tmp_path, monkeypatch) -> None:
    out = _run(tmp_path, monkeypatch, "few")
    assert out.status == "VALID" and out.exit_code == EXIT_OK, out.results["invalid_reasons"]
    by = {m["metric"]: m for m in out.results["metrics"]}
    lat = by["response_latency_s"]
    assert lat["status"] == UNDERPOWERED and lat["n"] == 1 and lat["conditional_on"] == "take-overs"
    assert lat["reason"] == "take-overs: 1 of 8; underpowered: n=1 take-overs < min_samples=4, no verdict"
    assert by["turn_over_rate"]["status"] == OK
    # the console says it, with n and the threshold
    lines = status_lines(out.results)
    assert "1 ok, 1 underpowered" in lines[0]
    assert "  underpowered, n=1 take-overs < min_samples=4: baseline/response_latency_s" in lines
    # the report's cell shows the value marked underpowered
    c = cell(lat)
    assert not c["failed"] and c["status"] == UNDERPOWERED and c["value"]


@pytest.mark.usefixtures("fakes")
def test_enough_events_is_ok(tmp_path, monkeypatch) -> None:
    out = _run(tmp_path, monkeypatch, "many")
    assert out.status == "VALID"
    assert {m["metric"]: m["status"] for m in out.results["metrics"]}["response_latency_s"] == OK


@pytest.mark.usefixtures("fakes")
def test_nothing_but_underpowered_and_failed_records_is_not_valid(tmp_path, monkeypatch) -> None:
    out = _run(tmp_path, monkeypatch, "none_valid")
    assert out.status == "INVALID" and out.exit_code == EXIT_INVALID
    (reason,) = out.results["invalid_reasons"]
    assert reason.startswith("baseline/turns: scored nothing but underpowered records (1 failed, 1 under")


# --- readers ----------------------------------------------------------------------------------------------
def test_an_underpowered_record_bears_no_claim_verdict() -> None:
    e = Evidence(value=0.5, ci_low=0.4, ci_high=0.6, record_status=UNDERPOWERED, record_reason="n=1")
    assert judge(ClaimBar(1.0, "lower"), e).kind == NO_VERDICT


def _doc(status: str, value: float | None, reason: str = "") -> dict:
    m = {"suite": "s", "variant": "base", "metric": "response_latency_s", "condition": {}, "unit": "s",
         "value": value, "n": 1, "status": status, "reason": reason, "higher_is_better": False}  # fmt: skip
    return {"suite": {"name": "s"}, "status": "VALID", "variants": [{"name": "base"}], "metrics": [m]}


def test_the_gate_does_not_gate_an_underpowered_record() -> None:
    row = compare(_doc(UNDERPOWERED, 0.9, "underpowered: n=1"), _doc(OK, 0.3)).rows[-1]
    assert row.verdict == NOT_GATED and "underpowered: n=1" in row.reason
    row = compare(_doc(OK, 0.3), _doc(UNDERPOWERED, 0.9, "underpowered: n=2")).rows[-1]
    assert row.verdict == NOT_GATED
    # a failed record is still a regression
    row = compare(_doc("failed", None, "nothing scored"), _doc(OK, 0.3)).rows[-1]
    assert row.verdict == REGRESSION


def test_replicates_pool_underpowered_as_underpowered_and_invalid_wins() -> None:
    def rep(status: str) -> MetricRecord:
        rec = latency(2)
        rec.status, rec.reason = status, f"{status} here" if status != OK else ""
        return rec

    pooled, _ = pool_replicates([(0, [rep(OK)], []), (1, [rep(UNDERPOWERED)], [])])
    assert pooled[0].status == UNDERPOWERED and pooled[0].value is not None
    pooled, _ = pool_replicates([(0, [rep(INVALID)], []), (1, [rep(UNDERPOWERED)], [])])
    assert pooled[0].status == INVALID

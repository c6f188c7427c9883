"""vemi_eval/aggregate.py on partial-file entries alone, without a run: the run's status, what is
missing, the errors and the ratios to the baseline (the runner only measures and appends)."""

from __future__ import annotations

from vemi_eval.aggregate import aggregate
from vemi_eval.records import MetricRecord
from vemi_eval.rundir import INCOMPLETE, INVALID, VALID, result_entry


def _rec(variant: str, value: float, samples: list[float]) -> MetricRecord:
    return MetricRecord("s", variant, "size", value, "B", len(samples), kind="k", samples=samples,
                        statistic="mean")  # fmt: skip


def test_a_finished_run_is_valid_with_ratios_to_the_baseline() -> None:
    entries = [
        result_entry("k", "base", [_rec("base", 2.0, [1.0, 3.0])], []),
        result_entry("k", "v", [_rec("v", 4.0, [3.0, 5.0])], []),
    ]
    run = aggregate(entries, {("k", "base", 0), ("k", "v", 0)}, {"base": 1, "v": 1}, "base", 0, {})
    assert run.status == VALID and not run.missing and not run.errors
    assert [r.ratio_to_baseline for r in run.records] == [None, 2.0]
    assert all(r.ci_low is not None for r in run.records)  # intervals from the raw samples


def test_a_crashed_replicate_and_a_missing_one_make_the_run_incomplete() -> None:
    entries = [
        result_entry("k", "base", [_rec("base", 2.0, [1.0, 3.0])], []),
        {"type": "error", "kind": "k", "variant": "v", "replicate": 1, "error": "RuntimeError: boom"},
    ]
    planned = {("k", "base", 0), ("k", "v", 0), ("k", "v", 1)}
    run = aggregate(entries, planned, {"base": 1, "v": 2}, "base", 0, {})
    assert run.status == INCOMPLETE
    assert run.errors == [{"kind": "k", "variant": "v", "replicate": 1, "error": "RuntimeError: boom"}]
    assert run.missing == ["k/v replicate 1"]


def test_a_kind_that_scored_nothing_makes_the_run_invalid() -> None:
    entries = [result_entry("k", "base", [], [])]
    run = aggregate(entries, {("k", "base", 0)}, {"base": 1}, "base", 0, {})
    assert run.status == INVALID
    assert run.invalid_reasons == ["base/k: scored nothing (the measurement returned no record)"]

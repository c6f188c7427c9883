"""The runner: results on disk as they finish, --resume skips finished work, the results.json schema."""

from __future__ import annotations

import json

import pytest

from tests.test_runner_helpers import CALLS, CRASH_ON, SUITE, fake_build, fakes, write_suite  # noqa: F401
from vemi_eval import history
from vemi_eval.errors import EXIT_INCOMPLETE, EXIT_INVALID, EXIT_OK, OptionsError
from vemi_eval.recorded_run import run_suite
from vemi_eval.results import read_partial, read_results
from vemi_eval.runner import RunOptions

pytestmark = pytest.mark.usefixtures("fakes")


def _opts(tmp_path, suite, **kw) -> RunOptions:
    base = dict(
        suite=str(suite),
        out=str(tmp_path / "run"),
        report=False,
        progress=False,
        history_path=tmp_path / "h.sqlite",
        build_fn=fake_build,
    )
    base.update(kw)
    return RunOptions(**base)


def test_crash_part_way_then_resume_redoes_only_the_missing(tmp_path) -> None:
    suite = write_suite(tmp_path)
    CRASH_ON.add("slow")
    first = run_suite(_opts(tmp_path, suite), echo=lambda m: None)
    assert first.exit_code == EXIT_INCOMPLETE and first.status == "INCOMPLETE"
    assert CALLS == [("fake_a", "base"), ("fake_b", "base"), ("fake_a", "slow"), ("fake_b", "slow")]
    assert (
        first.results["errors"][0]["kind"] == "fake_b" and "fake crash" in first.results["errors"][0]["error"]
    )
    done = {(e["kind"], e["variant"]) for e in read_partial(tmp_path / "run") if e["type"] == "result"}
    assert done == {("fake_a", "base"), ("fake_b", "base"), ("fake_a", "slow")}

    CALLS.clear()
    CRASH_ON.clear()
    second = run_suite(_opts(tmp_path, suite, resume=True), echo=lambda m: None)
    assert CALLS == [("fake_b", "slow")]  # nothing finished was redone
    assert second.exit_code == EXIT_OK and second.status == "VALID"
    names = {(m["variant"], m["metric"]) for m in second.results["metrics"]}
    assert names == {
        ("base", "step_ms"),
        ("base", "mean_ms"),
        ("base", "other_ms"),
        ("slow", "step_ms"),
        ("slow", "mean_ms"),
        ("slow", "other_ms"),
    }

    # the resumed run equals an uninterrupted one (same seeds for every measurement)
    CALLS.clear()
    fresh = run_suite(_opts(tmp_path, suite, out=str(tmp_path / "fresh")), echo=lambda m: None)
    key = lambda d: sorted((m["variant"], m["metric"], m["value"]) for m in d["metrics"])  # noqa: E731
    assert key(fresh.results) == key(second.results)


def test_resume_refuses_a_different_run(tmp_path) -> None:
    suite = write_suite(tmp_path)
    run_suite(_opts(tmp_path, suite), echo=lambda m: None)
    with pytest.raises(OptionsError, match="different seed"):
        run_suite(_opts(tmp_path, suite, resume=True, seed=7), echo=lambda m: None)


def test_results_json_schema_and_ratios(tmp_path) -> None:
    suite = write_suite(tmp_path)
    out = run_suite(_opts(tmp_path, suite), echo=lambda m: None)
    doc = read_results(tmp_path / "run")
    for k in (
        "schema",
        "schema_version",
        "suite",
        "model",
        "variants",
        "seed",
        "quick",
        "threads",
        "status",
        "invalid_reasons",
        "environment",
        "evaluators",
        "data",
        "started",
        "finished",
        "metrics",
    ):
        assert k in doc, k
    assert doc["schema"] == "vemi-eval/results" and doc["schema_version"] == 2
    assert set(doc["suite"]) >= {"name", "path", "sha256", "content"}
    assert set(doc["model"]) >= {"lm", "codec", "lm_checkpoint", "codec_checkpoint", "device", "dtype"}
    assert set(doc["environment"]) >= {
        "git_commit",
        "git_dirty",
        "python",
        "platform",
        "cpu",
        "gpu",
        "torch",
        "packages",
        "hostname",
    }
    assert [{k: v[k] for k in ("name", "flags", "is_baseline")} for v in doc["variants"]] == [
        {"name": "base", "flags": [], "is_baseline": True},
        {"name": "slow", "flags": ["test-slow"], "is_baseline": False},
    ]
    # each variant's effective model: one checkpoint entry per replicate, what its weights are
    assert doc["variants"][0]["lm"] == "tiny" and doc["variants"][0]["replicates"] == 1
    assert doc["variants"][0]["weights"] in ("trained", "random") and doc["variants"][1]["aa"] is False
    assert doc["threads"] == 1 and out.exit_code == EXIT_OK
    by = {(m["variant"], m["metric"]): m for m in doc["metrics"]}
    slow = by[("slow", "step_ms")]
    # the fake makes "slow" exactly 1.3x slower on the same draws
    assert slow["ratio_to_baseline"] == pytest.approx(1.3)
    assert slow["ratio_ci_low"] < 1.3 < slow["ratio_ci_high"]
    assert (
        by[("base", "step_ms")]["ci_low"]
        < by[("base", "step_ms")]["value"]
        < by[("base", "step_ms")]["ci_high"]
    )
    assert by[("slow", "mean_ms")]["ratio_to_baseline"] == pytest.approx(1.3)  # no samples: ratio only
    assert by[("slow", "mean_ms")]["ratio_ci_low"] is None
    assert by[("base", "step_ms")]["ratio_to_baseline"] is None
    csv = (tmp_path / "run" / "samples.csv").read_text().splitlines()
    assert csv[0].startswith("suite,variant,kind,metric") and len(csv) > 100
    assert (tmp_path / "run" / "run.log").read_text().count("measuring") == 4


def test_invalid_when_a_validity_rule_fails(tmp_path) -> None:
    suite = write_suite(
        tmp_path, text=write_suite(tmp_path).read_text().replace("min_frames = 10", "min_frames = 50")
    )
    out = run_suite(_opts(tmp_path, suite, quick=True), echo=lambda m: None)  # quick: n = 20 frames
    assert out.status == "INVALID" and out.exit_code == EXIT_INVALID
    assert any("frames=20 < min_frames=50" in r for r in out.results["invalid_reasons"])


def test_flags_option_replaces_variants_and_gpu_variant_is_skipped(tmp_path) -> None:
    gpu_variant = '[[variants]]\nname = "gpu"\nflags = ["test-cuda"]\n\n[validity]'
    suite = write_suite(tmp_path, text=SUITE.replace("[validity]", gpu_variant, 1))
    out = run_suite(_opts(tmp_path, suite), echo=lambda m: None)
    gpu = [m for m in out.results["metrics"] if m["variant"] == "gpu"]
    assert gpu and all(m["status"] == "skipped" and "CUDA" in m["reason"] for m in gpu)
    assert out.status == "VALID"

    CALLS.clear()
    out2 = run_suite(
        _opts(tmp_path, suite, out=str(tmp_path / "r2"), flags=["test-slow"]), echo=lambda m: None
    )
    assert [v["name"] for v in out2.results["variants"]] == ["base", "test-slow"]
    assert {v for _, v in CALLS} == {"base", "test-slow"}


def test_history_is_appended_not_overwritten(tmp_path) -> None:
    suite = write_suite(tmp_path)
    db = tmp_path / "hist.sqlite"
    run_suite(_opts(tmp_path, suite, history_path=db), echo=lambda m: None)
    run_suite(_opts(tmp_path, suite, history_path=db, out=str(tmp_path / "run2")), echo=lambda m: None)
    runs = history.runs(db)
    assert [r["run_id"] for r in runs] == [1, 2] and all(r["suite"] == "fake" for r in runs)
    rows = history.metric_history("step_ms", "slow", db)
    assert len(rows) == 2 and rows[0]["value"] == rows[1]["value"]  # same seed, same draws
    doc = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert history.append_run(doc, path=db) == 3


def test_a_flag_that_cannot_run_here_found_at_build_is_skipped_with_the_reason(tmp_path) -> None:
    """A kernel this device lacks (found only when the variant is built, e.g. a CPU-only int8 kernel on
    CUDA) skips that variant with the reason; the other variants are measured and the run stays VALID."""
    from reference_model import FlagError

    def build(spec):
        if "test-slow" in (spec.flags or []):
            raise FlagError("the test kernel needs another device")
        return fake_build(spec)

    out = run_suite(_opts(tmp_path, write_suite(tmp_path), build_fn=build), echo=lambda m: None)
    assert out.status == "VALID" and out.exit_code == EXIT_OK
    slow = [m for m in out.results["metrics"] if m["variant"] == "slow"]
    assert slow and all(m["status"] == "skipped" for m in slow)
    assert slow[0]["reason"] == "cannot run here: the test kernel needs another device"
    assert {m["variant"] for m in out.results["metrics"] if m["status"] == "ok"} == {"base"}

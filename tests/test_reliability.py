"""Nothing lost, nothing masked: reruns, torn writes, full disks, runs that scored nothing, skipped inputs,
validation before any work (issue 10). Each test fails on the harness before these fixes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.test_runner_helpers import CALLS, CRASH_ON, FAKE_KINDS, fake_build, fakes, write_suite  # noqa: F401
from vemi_eval import measurements, run_results, rundir
from vemi_eval import results as rs
from vemi_eval.cli import main
from vemi_eval.cli.run import resume_command
from vemi_eval.errors import (
    EXIT_BAD_INPUT,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_STORAGE,
    StorageError,
    SuiteError,
)
from vemi_eval.measurements import MeasurementSpec
from vemi_eval.recorded_run import run_suite
from vemi_eval.records import FAILED, OK, MetricRecord
from vemi_eval.runner import RunOptions
from vemi_eval.storage import append_line, write_atomic

pytestmark = pytest.mark.usefixtures("fakes")


def _opts(tmp_path: Path, suite: Path, **kw) -> RunOptions:
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


def _run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def _one_line(err: str) -> str:
    # a run's progress lines ("[2/4] kind / variant done in ...") come before its error in a log
    err = "".join(line for line in err.splitlines(keepends=True) if not re.match(r"\[\d+/\d+\] ", line))
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- case 2: a finished run is never destroyed without --overwrite ------------------------------------
def test_rerun_without_resume_keeps_the_finished_run(tmp_path, capsys) -> None:
    suite = write_suite(tmp_path)
    out = tmp_path / "run"
    code, _, _ = _run(capsys, "run", str(suite), "--out", str(out), "--history", str(tmp_path / "h.sqlite"))
    assert code == EXIT_OK
    before = {n: (out / n).read_bytes() for n in (rs.RESULTS_FILE, rs.SAMPLES_FILE, rs.REPORT_FILE)}
    CALLS.clear()
    code, _, err = _run(capsys, "run", str(suite), "--out", str(out), "--no-history")
    assert code == EXIT_BAD_INPUT and "--overwrite" in _one_line(err) and "--resume" in err
    assert CALLS == []  # no work done
    assert {n: (out / n).read_bytes() for n in before} == before  # nothing touched
    code, _, _ = _run(capsys, "run", str(suite), "--out", str(out), "--no-history", "--overwrite")
    assert code == EXIT_OK and CALLS  # explicitly asked: replaced


# --- case 3: a torn last line is cut off before appending ---------------------------------------------
def test_append_after_a_torn_line_keeps_both_neighbours(tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": 1}\n{"b": 2', encoding="utf-8")  # killed while writing the second line
    append_line(path, '{"c": 3}')
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"c": 3}\n'


def test_resume_after_a_torn_write_loses_no_finished_measurement(tmp_path) -> None:
    suite = write_suite(tmp_path)
    CRASH_ON.add("slow")
    run_suite(_opts(tmp_path, suite), echo=lambda m: None)
    partial = tmp_path / "run" / rs.PARTIAL_FILE
    with partial.open("a", encoding="utf-8") as f:
        f.write('{"type": "result", "kind": "fake_b", "vari')  # a disk full mid-line
    CRASH_ON.clear()
    second = run_suite(_opts(tmp_path, suite, resume=True), echo=lambda m: None)
    assert second.status == "VALID" and second.exit_code == EXIT_OK
    assert ("slow", "other_ms") in {(m["variant"], m["metric"]) for m in second.results["metrics"]}
    lines = partial.read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line) for line in lines)  # every line whole


def test_a_failed_whole_file_write_leaves_the_old_content(tmp_path, monkeypatch) -> None:
    target = tmp_path / "results.json"
    target.write_text("old", encoding="utf-8")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text(encoding="utf-8") == "old" and list(tmp_path.iterdir()) == [target]


# --- case 4: full disks and bad histories --------------------------------------------------------------
def test_disk_full_mid_run_is_exit_5_and_keeps_what_was_measured(tmp_path, monkeypatch, capsys) -> None:
    suite = write_suite(tmp_path)
    real, calls = rundir.append_partial, []

    def fills_up(out_dir, entry) -> None:
        calls.append(entry.get("type"))
        if len(calls) == 3:  # header, one result, then the disk is full
            raise OSError(28, "No space left on device")
        real(out_dir, entry)

    monkeypatch.setattr(rundir, "append_partial", fills_up)
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", str(suite), "--out", str(out), "--no-history")
    assert code == EXIT_STORAGE and "No space left" in _one_line(err) and "--resume" in err
    kept = rs.read_partial(out)
    assert [e["type"] for e in kept] == ["header", "result"] and kept[1]["records"]


def test_disk_full_at_finalize_is_exit_5_and_no_half_file(tmp_path, monkeypatch) -> None:
    suite = write_suite(tmp_path)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_results, "write_results", full)
    with pytest.raises(StorageError, match="No space left"):
        run_suite(_opts(tmp_path, suite, history=False), echo=lambda m: None)
    entries = rs.read_partial(tmp_path / "run")
    assert sum(e["type"] == "result" for e in entries) == 4  # every measurement kept for --resume
    assert not (tmp_path / "run" / rs.RESULTS_FILE).exists()


@pytest.mark.parametrize("kind", ["not a database", "not creatable"])
def test_a_bad_history_is_refused_before_any_work(tmp_path, capsys, kind) -> None:
    suite = write_suite(tmp_path)
    if kind == "not a database":
        history = tmp_path / "h.sqlite"
        history.write_bytes(b"this is not sqlite" * 100)
    else:
        (tmp_path / "a-file").write_text("x")
        history = tmp_path / "a-file" / "h.sqlite"
    code, _, err = _run(capsys, "run", str(suite), "--out", str(tmp_path / "r"), "--history", str(history))
    assert code == EXIT_BAD_INPUT and "history" in _one_line(err)
    assert CALLS == [] and not (tmp_path / "r" / rs.PARTIAL_FILE).exists()


def test_an_unwritable_out_is_refused_before_any_work(tmp_path, capsys) -> None:
    suite = write_suite(tmp_path)
    (tmp_path / "file").write_text("x")
    code, _, err = _run(capsys, "run", str(suite), "--out", str(tmp_path / "file" / "run"), "--no-history")
    assert code == EXIT_BAD_INPUT and "cannot write" in _one_line(err) and CALLS == []


def test_history_failing_after_the_run_keeps_results_and_report(tmp_path, monkeypatch, capsys) -> None:
    import sqlite3

    from vemi_eval import history

    suite = write_suite(tmp_path)

    def full(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(history, "append_run", full)
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", str(suite), "--out", str(out), "--history", str(tmp_path / "h.sqlite"))
    assert code == EXIT_STORAGE and "not added to the history" in _one_line(err)
    assert rs.read_results(out)["status"] == "VALID" and (out / rs.REPORT_FILE).is_file()


# --- case 5: a run that scored nothing is not VALID ------------------------------------------------------
NOTHING_SUITE = """\
[suite]
name = "nothing"
description = "a kind that scores nothing"

[scores]
mode = "none"
"""


def _scores(ctx):
    mode = ctx.params.get("mode", "ok")
    rec = lambda status, i: MetricRecord(  # noqa: E731
        ctx.suite, ctx.variant.name, f"m{i}", 1.0 if status == OK else None, "x", 1, status=status,
        reason="" if status == OK else "evaluator folder missing",
    )  # fmt: skip
    if mode == "empty":
        return []
    if mode == "none":
        return [rec(FAILED, i) for i in range(6)]
    if mode == "most":
        return [rec(OK, 0), rec(FAILED, 1), rec(FAILED, 2)]
    return [rec(OK, 0), rec(OK, 1), rec(FAILED, 2)]


SCORES = MeasurementSpec("scores", _scores, params={"mode": "ok"})


@pytest.mark.parametrize(
    ("mode", "status"), [("none", "INVALID"), ("empty", "INVALID"), ("most", "INVALID"), ("ok", "VALID")]
)
def test_a_kind_that_scored_nothing_makes_the_run_invalid(tmp_path, monkeypatch, mode, status) -> None:
    monkeypatch.setattr(measurements, "load_all", lambda: {**FAKE_KINDS, "scores": SCORES})
    suite = tmp_path / "nothing.toml"
    suite.write_text(NOTHING_SUITE.replace('"none"', f'"{mode}"'), encoding="utf-8")
    out = run_suite(_opts(tmp_path, suite, history=False), echo=lambda m: None)
    assert out.status == status
    if status == "INVALID":
        assert out.exit_code == EXIT_INVALID
        assert any("scores" in r for r in out.results["invalid_reasons"]), out.results["invalid_reasons"]


# --- case 6: skipped inputs are listed by name and reason everywhere -------------------------------------
def _skipping(ctx):
    ctx.skip_input("broken.wav", "not audio (RIFF header missing)")
    return [MetricRecord(ctx.suite, ctx.variant.name, "m", 1.0, "x", 1)]


SKIPPING = MeasurementSpec("skipping", _skipping, params={})


def test_every_skipped_input_is_in_the_log_results_and_report(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(measurements, "load_all", lambda: {"skipping": SKIPPING})
    suite = tmp_path / "s.toml"
    suite.write_text('[suite]\nname = "s"\ndescription = "d"\n[skipping]\n', encoding="utf-8")
    out = run_suite(_opts(tmp_path, suite, history=False, report=True), echo=lambda m: None)
    skipped = out.results["skipped_inputs"]
    why = "not audio (RIFF header missing)"
    assert skipped == [{"kind": "skipping", "variant": "baseline", "input": "broken.wav", "reason": why}]
    assert "broken.wav: not audio" in (tmp_path / "run" / rs.LOG_FILE).read_text(encoding="utf-8")
    page = (tmp_path / "run" / rs.REPORT_FILE).read_text(encoding="utf-8")
    assert "broken.wav" in page and "not audio (RIFF header missing)" in page
    assert "every record of every run is ok" not in page


# --- case 7 and 9: bad values are refused before any work (exit 2) ----------------------------------------
@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[codec]\nmetrics = ['pesq_wb', 'no_such_metric']", "no_such_metric"),
        ("[codec]\nn_codebooks = [0]", "n_codebooks"),
        ("[attention]\ncontexts = ['a']", "contexts"),
        ("[attention]\ncontexts = [-5]", "contexts"),
        ("[fidelity]\nframes = 0", "frames"),
        ("[latency]\nframes = 0", "frames"),
        ("[latency]\n[latency.quick]\nframes = 0", "latency.quick"),
        ("[data]\nlimit = 'abc'\n[codec]", "limit"),
        ("[model]\ntemp = -1.0\n[latency]", "temp"),
        ("[model]\ntop_k = -5\n[latency]", "top_k"),
        ("[validity]\nmax_failed_share = 2.0\n[latency]", "max_failed_share"),
    ],
)
def test_bad_parameter_values_are_refused_when_the_suite_loads(table, message, monkeypatch) -> None:
    from vemi_eval.suites import parse_suite

    monkeypatch.undo()  # the real kinds
    with pytest.raises(SuiteError, match=message):
        parse_suite(f'[suite]\nname = "x"\ndescription = "d"\n{table}\n', known_kinds=measurements.load_all())


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--seed", str(2**64)], ["--threads", "0"]])
def test_bad_seed_and_threads_are_one_line_exit_2(tmp_path, capsys, args) -> None:
    suite = write_suite(tmp_path)
    code, _, err = _run(capsys, "run", str(suite), "--out", str(tmp_path / "r"), "--no-history", *args)
    assert code == EXIT_BAD_INPUT and args[0] in _one_line(err) and CALLS == []


def test_data_pointing_at_a_file_says_so(tmp_path, capsys) -> None:
    suite = write_suite(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,transcript\n")
    code, _, err = _run(capsys, "run", str(suite), "--data", str(manifest), "--no-history")
    assert code == EXIT_BAD_INPUT and "is a file" in _one_line(err)


def test_the_resume_hint_repeats_every_option_the_run_checks() -> None:
    opts = RunOptions(suite="latency", quick=True, seed=3, flags=["int8"], preset="tiny", threads=2)
    hint = resume_command(opts, Path("runs/x"))
    for part in ("--quick", "--seed 3", "--flags int8", "--preset tiny", "--threads 2", "--out runs/x"):
        assert part in hint, hint
    assert hint.endswith("--resume")


# --- case 8: the gate ---------------------------------------------------------------------------------
def test_gate_against_another_suite_is_refused(tmp_path, capsys) -> None:
    suite = write_suite(tmp_path)
    run_suite(_opts(tmp_path, suite, history=False), echo=lambda m: None)
    doc = json.loads((tmp_path / "run" / rs.RESULTS_FILE).read_text())
    doc["suite"]["name"] = "other"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / rs.RESULTS_FILE).write_text(json.dumps(doc))
    code, _, err = _run(capsys, "gate", str(tmp_path / "run"), "--baseline", str(tmp_path / "other"))
    assert code == EXIT_BAD_INPUT and "suite" in _one_line(err)


def test_readme_lists_every_exit_code() -> None:
    from vemi_eval.errors import EXIT_CODES

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for code in EXIT_CODES:
        assert f"| {code} " in readme, code


def test_options_error_for_resume_and_overwrite(tmp_path, capsys) -> None:
    suite = write_suite(tmp_path)
    code, _, err = _run(capsys, "run", str(suite), "--out", str(tmp_path), "--resume", "--overwrite")
    assert code == EXIT_BAD_INPUT and "exclude" in err


def test_a_run_frees_memory_only_where_it_matters(tmp_path, monkeypatch) -> None:
    """gc + malloc_trim cost about 0.15 s a call: once per variant that held a model, and before the
    kinds that measure peak memory, not before every measurement."""
    from vemi_eval import runner, variant_builder

    calls = []
    monkeypatch.setattr(runner, "release_memory", lambda: calls.append(1))  # before a peak-memory kind
    monkeypatch.setattr(variant_builder, "release_memory", lambda: calls.append(1))  # a variant freed
    suite = write_suite(tmp_path)  # two variants, two kinds, no peak-memory kind
    run_suite(_opts(tmp_path, suite, history=False), echo=lambda m: None)
    assert len(calls) == 2

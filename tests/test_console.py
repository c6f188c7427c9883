"""The first ten minutes on the command line (issue 34): a run's stdout ends in a short summary that names
its report, its stderr has a progress line per (kind, variant) in a log, the long table is behind --table
and `show`, and the small fixes (--version, list flags headings, data counted before work, invalid lines
once with their condition, no internal messages in run.log, flag suggestions, report's default path,
matrix intervals and tally, history)."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from tests.test_runner_helpers import FAKE_KINDS, SUITE, fakes, write_suite  # noqa: F401
from vemi_eval import measurements
from vemi_eval.cli import main
from vemi_eval.measurements import MeasurementSpec
from vemi_eval.records import INVALID, MetricRecord

REPO = Path(__file__).resolve().parent.parent
PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (\S+) / (\S+) done in ")


def _run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


@pytest.mark.usefixtures("fakes")
def test_a_run_ends_in_a_short_summary_and_logs_progress(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, stderr = _run(capsys, "run", str(write_suite(tmp_path)), "--out", str(out))
    assert code == 0
    lines = stdout.rstrip("\n").splitlines()
    assert len(lines) <= 40 and max(map(len, lines)) <= 120
    assert lines[0].startswith("status: VALID")
    assert f"report: {out / 'report.html'}" in lines  # the summary names the report
    assert lines[-1] == f"every figure: vemi-eval show {out}"
    # the slow variant's figure is a ratio with the baseline value it was taken against
    slow = next(x for x in lines if x.strip().startswith("slow"))
    assert re.search(r"x1\.\d+ \[[\d.]+, [\d.]+\] of [\d.]+ ms", slow), slow
    assert "95% CI  vs baseline" not in stdout  # the long table is not printed by default
    # captured stderr is not a terminal: one progress line per (kind, variant), with what is left
    seen = [PROGRESS.match(x) for x in stderr.splitlines()]
    pairs = [(m.group(3), m.group(4)) for m in seen if m]
    assert pairs == [("fake_a", "base"), ("fake_b", "base"), ("fake_a", "slow"), ("fake_b", "slow")]
    assert "left)" in stderr and "elapsed" in stderr


@pytest.mark.usefixtures("fakes")
def test_a_resumed_run_says_once_what_was_on_disk(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    suite = str(write_suite(tmp_path))
    assert _run(capsys, "run", suite, "--out", str(out), "--no-report")[0] == 0
    (out / "results.json").unlink()  # as if killed before the end: every measurement is on disk
    code, stdout, stderr = _run(capsys, "run", suite, "--out", str(out), "--no-report", "--resume")
    assert code == 0 and stdout.startswith("status: VALID")
    assert stderr.splitlines() == [f"resume: 4 of 4 measurements already on disk in {out}"]


@pytest.mark.usefixtures("fakes")
def test_the_long_table_is_behind_table_and_show(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, _ = _run(capsys, "run", str(write_suite(tmp_path)), "--out", str(out), "--table")
    assert code == 0 and "vs baseline" in stdout and "status: VALID" in stdout
    row = next(x for x in stdout.splitlines() if x.startswith("slow") and "step_ms" in x)
    assert re.search(r"x1\.\d+ \[[\d.]+, [\d.]+\] of [\d.]+ ms", row), row  # the ratio's baseline value
    code, shown, _ = _run(capsys, "show", str(out))
    assert code == 0 and "vs baseline" in shown and shown.rstrip().endswith(f"vemi-eval show {out}")


def test_version(capsys) -> None:
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and re.fullmatch(r"vemi-eval \d+\.\d+\.\d+\n", out)


def test_list_flags_headings(capsys) -> None:
    code, out, _ = _run(capsys, "list", "flags")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("The document's 18 enhancements")
    head = next(i for i, x in enumerate(lines) if x.startswith("Flags ("))
    assert lines[head + 1].split()[0] == "flag"  # the flag table sits under its own heading
    assert all("not implemented" not in x.lower() for x in lines[head - 1 : head + 1])


def _per_input_kind(ctx):
    """A quality kind: one record per condition, n = the utterances it could score (here 3)."""
    return [
        MetricRecord(ctx.suite, ctx.variant.name, "pesq", 2.0, "", 3, condition={"n_codebooks": nq})
        for nq in (2, 8)
    ]


PER_INPUT_KIND = MeasurementSpec(
    "quality", _per_input_kind, params={"max_utterances": 0}, takes_data=True, per_input=True
)

QUALITY_SUITE = """\
[suite]
name = "quality"
description = "a per-input quality kind"

[[variants]]
name = "base"

[validity]
min_samples = 4

[quality]
max_utterances = 0
"""


@pytest.fixture
def quality_kind(monkeypatch, fakes):  # noqa: F811
    monkeypatch.setattr(measurements, "load_all", lambda: {**FAKE_KINDS, "quality": PER_INPUT_KIND})


def _audio_folder(path: Path, n: int) -> Path:
    import soundfile as sf

    path.mkdir()
    for i in range(n):
        sf.write(path / f"u{i}.wav", np.sin(np.arange(24000) * 0.05 * (i + 1)).astype("float32") * 0.3, 24000)
        (path / f"u{i}.txt").write_text("hello")
    return path


@pytest.mark.usefixtures("quality_kind")
def test_too_few_files_for_min_samples_is_refused_before_any_work(tmp_path, capsys) -> None:
    suite = write_suite(tmp_path, text=QUALITY_SUITE, name="quality.toml")
    data = _audio_folder(tmp_path / "three", 3)
    out = tmp_path / "run"
    code, _, err = _run(capsys, "run", str(suite), "--data", str(data), "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "3 input(s)" in err and "min_samples = 4" in err
    assert not out.exists()  # nothing was started


@pytest.mark.usefixtures("quality_kind")
def test_invalid_lines_once_each_with_their_condition(tmp_path, capsys) -> None:
    suite = write_suite(
        tmp_path, text=QUALITY_SUITE.replace("min_samples = 4", "min_samples = 5"), name="q.toml"
    )
    data = _audio_folder(tmp_path / "six", 6)  # enough files; the kind still scores 3: INVALID after work
    code, out, _ = _run(capsys, "run", str(suite), "--data", str(data), "--out", str(tmp_path / "r"))
    assert code == 3
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert doc["invalid_reasons"] == [
        "base/pesq[n_codebooks=2]: n=3 < min_samples=5",
        "base/pesq[n_codebooks=8]: n=3 < min_samples=5",
    ]
    for reason in doc["invalid_reasons"]:
        assert out.count(reason) == 1, out


def test_a_ratio_of_sums_gets_no_internal_message_in_the_log(caplog) -> None:
    from vemi_eval.aggregate import fill_intervals

    def wer(variant: str, errors: list[int]) -> MetricRecord:
        rec = MetricRecord("s", variant, "wer", sum(errors) / 40, "", 4, kind="wer", ci_low=0.1, ci_high=0.3)
        rec.statistic = "total errors / total reference units"
        return rec

    records = [wer("base", [1, 2, 3, 2]), wer("v", [2, 2, 3, 3])]
    rows = {("wer", v): [{"metric": "wer", "value": x} for x in (0.1, 0.2, 0.3, 0.2)] for v in ("base", "v")}
    with caplog.at_level(logging.DEBUG, logger="vemi_eval"):
        fill_intervals(records, rows, "base", seed=0)
    assert records[1].ratio_to_baseline == pytest.approx(10 / 8)
    assert records[1].ratio_ci_low is None  # no interval by resampling for a ratio of sums
    assert "unknown statistic" not in caplog.text


def test_unknown_flag_suggests_what_was_meant() -> None:
    from reference_model.enhancements import FlagError, parse_flags

    for written, meant in (("flash", "attn=flash"), ("speculatve", "speculative"), ("gptq", "int4=gptq")):
        with pytest.raises(FlagError, match=re.escape(f"did you mean {meant!r}?")):
            parse_flags([written])
    with pytest.raises(FlagError) as exc:
        parse_flags(["warp-drive"])
    assert "did you mean" not in str(exc.value)


def test_report_without_out_says_where_it_wrote(tmp_path, capsys, monkeypatch) -> None:
    import shutil

    run = tmp_path / "dialogue"
    shutil.copytree(REPO / "reports" / "dialogue-tiny-quick", run)
    (run / "report.html").unlink()
    code, out, _ = _run(capsys, "report", str(run))
    assert code == 0 and out == f"report: {(run / 'report.html').resolve()} (the default for one run)\n"
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, "report", str(run), str(REPO / "reports" / "fidelity-tiny-quick"))
    assert code == 0 and out == f"report: {tmp_path / 'report.html'} (the default for several runs)\n"


def _int4_lm_step() -> dict:
    """The committed quick matrix's int4 LM-step record: the figures the console must print for it."""
    doc = json.loads((REPO / "reports" / "matrix-tiny-quick" / "results.json").read_text())
    return next(
        m
        for m in doc["metrics"]
        if m["variant"] == "int4" and m["metric"] == "frame_time_p50_ms" and m["condition"] == {"stage": "lm"}
    )


def test_matrix_shows_intervals_and_a_tally(capsys) -> None:
    code, out, _ = _run(capsys, "matrix", str(REPO / "reports" / "matrix-tiny-quick"))
    assert code == 0
    int4 = next(x for x in out.splitlines() if x.startswith("5.1") and "2x faster inference" in x)
    m = _int4_lm_step()  # its ratio with the interval, as the committed run holds them
    assert f"{m['ratio_to_baseline']:.3g} [{m['ratio_ci_low']:.3g}, {m['ratio_ci_high']:.3g}]" in int4, int4
    tally = out.rstrip().splitlines()[-1]
    assert tally.startswith("claims measured (20 claim x context rows): meets 4, falls short 9")


@pytest.mark.usefixtures("fakes")
def test_history_lists_runs_and_a_metric_trend(tmp_path, capsys) -> None:
    db = tmp_path / "h.sqlite"
    code, out, _ = _run(capsys, "history", "--history", str(db))
    assert code == 0 and "no history at" in out and not db.exists()  # reading never creates it
    suite = write_suite(tmp_path)
    for i in range(2):
        _run(capsys, "run", str(suite), "--out", str(tmp_path / f"r{i}"), "--history", str(db), "--no-report")
    code, out, _ = _run(capsys, "history", "--history", str(db), "--suite", "fake")
    assert code == 0 and out.splitlines()[-1] == f"2 run(s) in {db}" and str(tmp_path / "r1") in out
    page = tmp_path / "trend.html"
    code, out, _ = _run(
        capsys,
        "history",
        "--history",
        str(db),
        "--metric",
        "step_ms",
        "--variant",
        "slow",
        "--out",
        str(page),
    )
    assert code == 0 and out.count(" slow ") == 2 and "x1." in out
    html = page.read_text()
    assert (
        "data:image/png;base64," in html and "<script" not in html and "http" not in html.split("<body>")[1]
    )
    (tmp_path / "junk.sqlite").write_text("not a database")
    code, _, err = _run(capsys, "history", "--history", str(tmp_path / "junk.sqlite"))
    assert code == 2 and "not a vemi-eval history" in err


def test_progress_lines_estimate_what_is_left() -> None:
    from vemi_eval.progress import LineProgress, duration

    clock = iter([0.0, 0.0, 30.0, 30.0, 90.0])
    stream = io.StringIO()
    bar = LineProgress(4, stream, clock=lambda: next(clock))
    bar.set_description("latency / base")
    bar.update(1)
    bar.set_description("memory / base")
    bar.update(1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/4] latency / base done in 30 s (elapsed 30 s, about 1 min 30 s left)"
    assert lines[1] == "[2/4] memory / base done in 1 min 00 s (elapsed 1 min 30 s, about 1 min 30 s left)"
    assert duration(3725) == "1 h 02 min"


def test_a_long_measurement_says_where_it_is_every_two_minutes_in_a_log() -> None:
    from vemi_eval.progress import LineProgress

    clock = iter([0.0, 0.0, 60.0, 130.0, 200.0, 260.0])
    stream = io.StringIO()
    bar = LineProgress(1, stream, clock=lambda: next(clock))
    bar.set_description("dialogue / baseline")
    for i in range(4):  # at 60, 130, 200 and 260 s
        bar.set_postfix_str(f"session {i + 1}/48")
    assert stream.getvalue().splitlines() == [
        "  ... session 2/48 (2 min 10 s into dialogue / baseline)",
        "  ... session 4/48 (4 min 20 s into dialogue / baseline)",
    ]


def test_summary_of_an_invalid_run_leads_with_its_reasons() -> None:
    from vemi_eval.results import read_results
    from vemi_eval.run_summary import summary_lines

    doc = read_results(REPO / "reports" / "dialogue-tiny-quick")
    doc["status"] = "INVALID"
    doc["invalid_reasons"] = [f"baseline/answer_wer[x={i}]: n=1 < min_samples=4" for i in range(9)]
    lines = summary_lines(doc, Path("runs/x"), None)
    assert lines[0].startswith("status: INVALID")
    assert lines[1] == "  invalid: baseline/answer_wer[x=0]: n=1 < min_samples=4"
    assert "  ... 3 more reasons: results.json (invalid_reasons, errors)" in lines
    assert lines[-2] == "report: not built (vemi-eval report runs/x)"


def test_headline_figures_fit_forty_lines_for_sixteen_variants() -> None:
    from vemi_eval.results import read_results
    from vemi_eval.run_summary import summary_lines

    doc = read_results(REPO / "reports" / "matrix-tiny-quick")
    lines = summary_lines(
        doc, Path("reports/matrix-tiny-quick"), Path("reports/matrix-tiny-quick/report.html")
    )
    assert len(lines) <= 40 and max(map(len, lines)) <= 120
    m = _int4_lm_step()  # "of" the interleaved baseline's value: the variant's value over its ratio
    int4 = f"of {m['value'] / m['ratio_to_baseline']:.4g} ms (5.1 falls short)"
    assert any(x.strip().startswith("int4") and int4 in x for x in lines), int4
    assert any("meets 4, falls short 9" in x for x in lines)


def test_plot_styles_do_not_repeat_for_thirteen_variants() -> None:
    from vemi_eval.report.plots import style_of

    styles = {tuple(sorted(style_of(i).items())) for i in range(13)}
    assert len(styles) == 13


def test_records_of_invalid_status_count_as_reasons() -> None:
    from vemi_eval.aggregate import invalid_line

    rec = MetricRecord("s", "v", "stoi", 0.5, "", 2, condition={"n_codebooks": 8})
    rec.status, rec.reason = INVALID, "n=2 < min_samples=4"
    assert invalid_line(rec) == "v/stoi[n_codebooks=8]: n=2 < min_samples=4"

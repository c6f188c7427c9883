"""Nothing lost, nothing misread by sweep, run, gate and report (issue 32): no output over a run's
results or into another kind of directory, malformed results and rules one line, a baseline that
cannot fail a run refused, --data refused where no kind reads it. Each case: exit 2, one line,
every earlier file byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vemi_eval import runner
from vemi_eval.errors import EXIT_BAD_INPUT, OptionsError
from vemi_eval.rundir import SWEEP_FILE

from .test_gate import _doc, _write
from .test_sweep import _sweep, fake_kind  # noqa: F401  (the fixture)
from .test_training_outputs import cli, hashes


def refused(capsys, args: list[str], folder: Path, match: str) -> None:
    before = hashes(folder)
    code, _, err = cli(capsys, args)
    assert code == EXIT_BAD_INPUT and match in err, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert hashes(folder) == before


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished run: results.json, the partial file and samples.csv."""
    run = tmp_path / "RUN"
    run.mkdir()
    doc = _doc({"step_ms": [10.0, 11.0, 12.0]})
    _write(run / "results.json", doc)
    (run / "results.partial.jsonl").write_text('{"type": "header"}\n')
    (run / "samples.csv").write_text("metric,value\nstep_ms,10\n")
    return run


# --- 2. sweep and run keep to their own kind of directory ---------------------------------------------
@pytest.mark.usefixtures("fake_kind")
def test_a_sweep_never_goes_into_a_run_directory(tmp_path, run_dir):
    before = hashes(run_dir)
    for overwrite in (False, True):
        with pytest.raises(OptionsError, match="holds a run"):
            _sweep(tmp_path, "int8=rtn", out=str(run_dir), overwrite=overwrite)
    assert hashes(run_dir) == before


def test_a_run_never_goes_into_a_sweep_directory(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / SWEEP_FILE).write_text('{"earlier": true}\n')
    with pytest.raises(OptionsError, match="holds a sweep"):
        runner._prepare_out(out, {}, resume=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [SWEEP_FILE]


# --- 3. no command writes over a run's measurements ---------------------------------------------------
@pytest.mark.parametrize("name", ["results.json", "results.partial.jsonl", "samples.csv"])
def test_gate_and_report_outputs_never_replace_a_runs_measurements(tmp_path, capsys, run_dir, name):
    target = str(run_dir / name)
    base = ["gate", str(run_dir), "--baseline", str(run_dir)]
    refused(capsys, [*base, "--junit", target], tmp_path, "name of a run's measurements")
    refused(capsys, [*base, "--benchmark-json", target], tmp_path, "name of a run's measurements")
    refused(capsys, ["report", str(run_dir), "--out", target], tmp_path, "name of a run's measurements")


def test_report_into_a_folder_that_is_a_file_is_one_line(tmp_path, capsys, run_dir):
    (tmp_path / "afile").write_text("x")
    refused(
        capsys, ["report", str(run_dir), "--out", str(tmp_path / "afile" / "r.html")], tmp_path, "is a file"
    )


# --- 11. malformed results and rules ------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.update(metrics=[{}]), "metrics[0].variant"),
        (lambda d: d["metrics"][0].update(value="abc"), "metrics[0].value"),
        (lambda d: d.update(variants="abc"), "'variants' is a str"),
        (lambda d: d.update(suite="abc"), "'suite' is a str"),
        (lambda d: d["metrics"][0].update(condition=[1]), "metrics[0].condition"),
    ],
    ids=["empty-record", "value-abc", "variants-a-string", "suite-a-string", "condition-a-list"],
)
def test_malformed_results_are_one_line_naming_the_file_and_field(tmp_path, capsys, run_dir, change, match):
    bad = tmp_path / "BAD"
    bad.mkdir()
    doc = json.loads((run_dir / "results.json").read_text())
    change(doc)
    _write(bad / "results.json", doc)
    for args in (
        ["report", str(bad), "--out", str(tmp_path / "r.html")],
        ["matrix", str(bad)],
        ["gate", str(bad), "--baseline", str(run_dir)],
        ["gate", str(run_dir), "--baseline", str(bad)],
    ):
        refused(capsys, args, tmp_path, match)


@pytest.mark.parametrize("text", ["default = 5\n", "rules = 5\n"])
def test_rules_files_of_the_wrong_shape_are_one_line(tmp_path, capsys, run_dir, text):
    (tmp_path / "rules.toml").write_text(text)
    args = ["gate", str(run_dir), "--baseline", str(run_dir), "--rules", str(tmp_path / "rules.toml")]
    refused(capsys, args, tmp_path, "must be")


# --- 14. a baseline that could fail nothing -------------------------------------------------------------
@pytest.mark.parametrize(
    "baseline, match",
    [
        (_doc({}), "holds no scored metric"),
        (_doc({}, status="INVALID"), "not VALID"),
        (_doc({"step_ms": [10.0]}, status="INCOMPLETE"), "not VALID"),
    ],
    ids=["no-metrics", "invalid-and-empty", "incomplete"],
)
def test_the_gate_refuses_a_baseline_that_cannot_fail_a_run(tmp_path, capsys, run_dir, baseline, match):
    _write(tmp_path / "base.json", baseline)
    refused(capsys, ["gate", str(run_dir), "--baseline", str(tmp_path / "base.json")], tmp_path, match)


# --- 15. --data where nothing reads it ------------------------------------------------------------------
def test_data_for_a_suite_whose_kinds_read_none_is_refused(tmp_path, capsys):
    (tmp_path / "audio").mkdir()
    out = tmp_path / "out"
    args = [
        "run",
        "latency",  # (the dialogue kind reads --data: a user's own conversations)
        "--quick",
        "--data",
        str(tmp_path / "audio"),
        "--out",
        str(out),
        "--no-history",
    ]
    refused(capsys, args, tmp_path, "reads data")
    assert not out.exists()


# --- 12. suite names never leave runs/ nor exceed a file name -----------------------------------------------
@pytest.mark.usefixtures("fake_kind")
@pytest.mark.parametrize("name", ["../../x/escaped", "a/b", "a\\\\b", ".."])
def test_a_suite_name_with_separators_is_refused(tmp_path, name):
    from vemi_eval import measurements
    from vemi_eval.errors import SuiteError
    from vemi_eval.suites import load_suite

    from .test_sweep import SUITE

    path = tmp_path / "s.toml"
    path.write_text(SUITE.replace('name = "sweepfake"', f'name = "{name}"'))
    with pytest.raises(SuiteError, match="plain name"):
        load_suite(str(path), known_kinds=measurements.load_all())


def test_the_default_out_of_a_long_or_odd_name_is_one_short_folder_under_runs():
    from vemi_eval.rundir import default_out

    out = default_out("x" * 300)
    assert out.parent == Path("runs") and len(out.name) < 100
    assert default_out("a b*c").name.startswith("a-b-c-")


# --- 11. model info on a weights file -----------------------------------------------------------------------
def test_model_info_reports_a_weights_files_parameters(tmp_path, capsys):
    from .test_training_outputs import BUNDLED

    code, out, err = cli(capsys, ["model", "info", str(BUNDLED / "tiny_lm.safetensors"), "--json"])
    assert code == 0 and json.loads(out)["total_parameters"] > 1_000_000, err
    (tmp_path / "c.json").write_bytes(b"\xff\xfe not text")
    refused(capsys, ["model", "info", str(tmp_path / "c.json")], tmp_path, "not valid JSON")

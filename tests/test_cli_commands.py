"""The other commands: model info (table and JSON, bad name -> 2), report wiring, matrix, train --help."""

from __future__ import annotations

import json

import pytest

from tests.test_runner_helpers import fakes, write_suite  # noqa: F401
from vemi_eval.cli import main


def _run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def test_model_info_table_json_and_bad_name(capsys) -> None:
    code, out, _ = _run(capsys, "model", "info", "tiny", "--json")
    assert code == 0 and json.loads(out)["total_parameters"] > 0
    code, out, _ = _run(capsys, "model", "info", "tiny")
    assert code == 0 and "total_parameters" in out and "MiB" in out
    code, _, err = _run(capsys, "model", "info", "no-such-model")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_report_and_matrix_on_a_run(fakes, tmp_path, capsys, monkeypatch) -> None:  # noqa: F811
    import vemi_eval.report

    seen = {}

    def fake_build_report(run_dirs, out_html):
        seen["dirs"], seen["out"] = list(run_dirs), out_html
        out_html.write_text("<html></html>")
        return out_html

    monkeypatch.setattr(vemi_eval.report, "build_report", fake_build_report)
    suite = write_suite(tmp_path)
    code, out, _ = _run(capsys, "run", str(suite), "--out", str(tmp_path / "r1"), "--no-report")
    assert code == 0
    code, out, _ = _run(capsys, "report", str(tmp_path / "r1"))
    assert code == 0 and seen["dirs"] == [tmp_path / "r1"] and seen["out"] == tmp_path / "r1" / "report.html"
    code, out, _ = _run(
        capsys, "report", str(tmp_path / "r1"), str(tmp_path / "r1"), "--out", str(tmp_path / "both.html")
    )
    assert code == 0 and len(seen["dirs"]) == 2 and (tmp_path / "both.html").is_file()
    code, _, err = _run(capsys, "report", str(tmp_path / "nothing-here"))
    assert code == 2 and "no results at" in err
    code, out, _ = _run(capsys, "matrix", str(tmp_path / "r1"), "--json")
    assert code == 0 and len(json.loads(out)) == 18


def test_train_codec_help_and_bad_minutes(capsys) -> None:
    code, out, _ = _run(capsys, "train", "codec", "--help")
    assert code == 0 and "--minutes" in out
    code, _, err = _run(capsys, "train", "codec", "--minutes", "0")
    assert code == 2 and "must be > 0" in err

"""Exit codes of the command line: one line on stderr and exit 2 for each kind of bad input, 3 for an
INVALID run, 0 for a VALID one; never a traceback."""

from __future__ import annotations

import json

import pytest

from tests.test_runner_helpers import SUITE, fakes, write_suite  # noqa: F401
from vemi_eval.cli import main

pytestmark = pytest.mark.usefixtures("fakes")


def _run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def _bad(capsys, *args) -> str:
    code, _, err = _run(capsys, *args)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_unknown_suite(capsys) -> None:
    assert "unknown suite 'no-such-suite'" in _bad(capsys, "run", "no-such-suite")


def test_a_suite_is_found_by_the_name_its_reports_show() -> None:
    from vemi_eval.suites import resolve_suite_path

    assert resolve_suite_path("codec-festival-voices") == resolve_suite_path("codec_festival_voices")


def test_invalid_suite_files(tmp_path, capsys) -> None:
    cases = {
        "bad toml": ("[suite\nname=1", "invalid suite file"),
        "unknown key": (SUITE.replace("threads = 1", "threadz = 1"), "unknown key 'threadz'"),
        "wrong type": (SUITE.replace("n = 60", 'n = "sixty"'), "'n' must be an integer"),
        "unknown kind": (SUITE + "\n[warp_speed]\nx = 1\n", "unknown measurement kind [warp_speed]"),
        "unknown param": (SUITE.replace("n = 30", "frames = 30"), "unknown key 'frames'"),
        "no name": (SUITE.replace('name = "fake"', ""), "needs a 'name'"),
        "bad variant ref": (SUITE.replace("n = 30", 'n = 30\nvariants = ["nope"]'), "names variant 'nope'"),
    }
    for what, (text, msg) in cases.items():
        p = write_suite(tmp_path, text=text, name=f"{what.replace(' ', '_')}.toml")
        assert msg in _bad(capsys, "run", str(p), "--out", str(tmp_path / "o")), what


def test_unknown_flag_in_suite_and_on_the_command_line(tmp_path, capsys) -> None:
    p = write_suite(tmp_path, text=SUITE.replace('["test-slow"]', '["warp-drive"]'))
    assert "unknown flag 'warp-drive'" in _bad(capsys, "run", str(p))
    p = write_suite(tmp_path)
    assert "unknown flag 'nope'" in _bad(capsys, "run", str(p), "--flags", "nope")
    # a GPU-only flag asked on the command line for a CPU run is bad usage
    assert "needs a CUDA device" in _bad(capsys, "run", str(p), "--flags", "test-cuda")


def test_missing_checkpoint_and_config(tmp_path, capsys) -> None:
    p = write_suite(tmp_path)
    assert "checkpoint not found" in _bad(
        capsys, "run", str(p), "--checkpoint", str(tmp_path / "x.safetensors")
    )
    assert "checkpoint not found" in _bad(capsys, "run", str(p), "--codec-checkpoint", str(tmp_path / "c.st"))
    assert "config file not found" in _bad(capsys, "run", str(p), "--config", str(tmp_path / "cfg.json"))
    assert "data directory not found" in _bad(capsys, "run", str(p), "--data", str(tmp_path / "nodata"))
    assert "unknown device" in _bad(capsys, "run", str(p), "--device", "tpu")


def test_valid_run_exit_0_invalid_run_exit_3(tmp_path, capsys) -> None:
    p = write_suite(tmp_path)
    code, out, _ = _run(capsys, "run", str(p), "--out", str(tmp_path / "ok"), "--no-report")
    assert code == 0 and "status: VALID" in out and "step_ms" in out
    strict = write_suite(
        tmp_path, text=SUITE.replace("min_frames = 10", "min_frames = 50"), name="strict.toml"
    )
    code, out, _ = _run(capsys, "run", str(strict), "--quick", "--out", str(tmp_path / "inv"), "--no-report")
    assert code == 3 and "status: INVALID" in out and "min_frames=50" in out
    doc = json.loads((tmp_path / "inv" / "results.json").read_text())
    assert doc["status"] == "INVALID" and doc["quick"] is True
    # --resume without --out is usage
    code, _, err = _run(capsys, "run", str(p), "--resume")
    assert code == 2 and "--resume needs --out" in err


def test_list_flags_json_has_the_eighteen(capsys) -> None:
    code, out, _ = _run(capsys, "list", "flags", "--json")
    assert code == 0
    doc = json.loads(out)
    assert len(doc["enhancements"]) == 18
    assert all(e["status"] in ("implemented", "not implemented") for e in doc["enhancements"])
    assert all(e["reason"] for e in doc["enhancements"] if e["status"] == "not implemented")
    assert {f["name"] for f in doc["flags"]} >= {"continuous-batching"}


def test_list_suites_and_help(capsys) -> None:
    code, out, _ = _run(capsys, "list", "suites")
    assert code == 0 and out.startswith("name")
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "Exit codes" in out and "INVALID" in out
    code, out, _ = _run(capsys, "run", "--help")
    assert code == 0 and "--flags" in out and "REPLACES" in out


def _tiny_checkpoints(tmp_path) -> dict[str, str]:
    """The tiny LM's and codec's random weights as safetensors, an int32 copy of each and a torch.save
    pickle of the LM."""
    import torch
    from safetensors.torch import save_file

    from reference_model import load_codec, load_lm

    torch.manual_seed(0)
    out = {}
    for part, model in (("lm", load_lm("tiny", "random")), ("codec", load_codec("tiny", "random"))):
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp_path / f"{part}.safetensors"))
        out[part] = str(tmp_path / f"{part}.safetensors")
        first_float = next(k for k, v in state.items() if v.is_floating_point())
        save_file(
            {**state, first_float: state[first_float].to(torch.int32)}, str(tmp_path / f"{part}_i32.st")
        )
        out[f"{part}_i32"] = str(tmp_path / f"{part}_i32.st")
        torch.save(state, tmp_path / f"{part}.pt")
        out[f"{part}_pt"] = str(tmp_path / f"{part}.pt")
    return out


def test_checkpoint_of_the_wrong_dtype_or_a_pickle_is_refused_before_any_work(tmp_path, capsys) -> None:
    # the fake builder never loads weights: only a check before any work can see these files
    p = write_suite(tmp_path)
    ck = _tiny_checkpoints(tmp_path)
    for opt, part in (("--checkpoint", "lm"), ("--codec-checkpoint", "codec")):
        out = tmp_path / f"out_{part}"
        err = _bad(capsys, "run", str(p), opt, ck[f"{part}_i32"], "--out", str(out))
        assert "has dtype I32, the model expects a floating type" in err, err
        err = _bad(capsys, "run", str(p), opt, ck[f"{part}_pt"], "--out", str(out))
        assert "not a safetensors file" in err and "pickle" in err, err
        assert not out.exists()  # refused before the run directory was made
    # the right files pass the check (and the fake run then completes)
    code, out, err = _run(
        capsys,
        "run",
        str(p),
        "--checkpoint",
        ck["lm"],
        "--codec-checkpoint",
        ck["codec"],
        "--out",
        str(tmp_path / "ok"),
        "--no-report",
    )
    assert code == 0, err


def test_run_and_sweep_answer_the_same_option_mistakes_alike(tmp_path, capsys) -> None:
    # one check serves both commands: a sweep took --resume --overwrite and silently ignored --overwrite
    p = str(write_suite(tmp_path))
    out = str(tmp_path / "o")
    for command in ("run", "sweep"):
        code, _, err = _run(capsys, command, p, "--resume")
        assert code == 2 and "--resume needs --out" in err, (command, err)
        code, _, err = _run(capsys, command, p, "--resume", "--overwrite", "--out", out)
        assert code == 2 and "--resume and --overwrite exclude each other" in err, (command, err)
    code, _, err = _run(capsys, "sweep", p, "--threads", "0")
    assert code == 2 and "--threads" in err and "must be >= 1" in err, err
    code, _, err = _run(capsys, "sweep", p, "--retries", "-1")
    assert code == 2 and "--retries" in err and "must be >= 0" in err, err

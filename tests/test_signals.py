"""A real process killed (SIGKILL, with a torn last line) or interrupted (SIGINT): nothing finished is lost,
--resume completes the run with no duplicate and the values of an uninterrupted run; Ctrl-C is exit 130."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from vemi_eval import results as rs

ROOT = Path(__file__).resolve().parent.parent
SUITE = """\
[suite]
name = "signals"
description = "three slow kinds on two variants"

[[variants]]
name = "base"

[[variants]]
name = "slow"
flags = ["test-slow"]

[slow_a]
pause_s = {pause}
[slow_b]
pause_s = {pause}
[slow_c]
pause_s = {pause}
"""


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fake_cli", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint, **kw,
    )  # fmt: skip


def _default_sigint() -> None:
    # A test run started in the background by a shell (`cmd &`) inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: the child must see Ctrl-C as a user's terminal sends it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_results(partial: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if partial.is_file() and sum(e["type"] == "result" for e in rs.read_partial(partial.parent)) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no {n} results in {partial} after {timeout} s")


def _values(doc: dict) -> list[tuple]:
    return sorted((m["variant"], m["kind"], m["metric"], m["value"]) for m in doc["metrics"])


def test_sigkill_with_a_torn_line_then_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    suite = tmp_path / "signals.toml"
    suite.write_text(SUITE.format(pause=0.4), encoding="utf-8")
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    common = ["run", str(suite), "--no-history", "--no-report"]
    proc = _cli(*common, "--out", str(run))
    _wait_for_results(run / rs.PARTIAL_FILE, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    with (run / rs.PARTIAL_FILE).open("a", encoding="utf-8") as f:
        f.write('{"type": "result", "kind": "slow_c", "variant": "ba')  # killed mid-write
    done_before = sum(e["type"] == "result" for e in rs.read_partial(run))

    resumed = _cli(*common, "--out", str(run), "--resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    entries = rs.read_partial(run)
    keys = [(e["kind"], e["variant"]) for e in entries if e["type"] == "result"]
    assert len(keys) == len(set(keys)) == 6 and done_before >= 2  # nothing redone, nothing twice
    doc = rs.read_results(run)
    assert doc["status"] == "VALID" and len(doc["metrics"]) == 6

    whole = _cli(*common, "--out", str(fresh))
    _, err = whole.communicate(timeout=120)
    assert whole.returncode == 0, err
    assert _values(doc) == _values(rs.read_results(fresh))


def test_sigint_is_exit_130_and_the_printed_command_resumes(tmp_path) -> None:
    suite = tmp_path / "signals.toml"
    suite.write_text(SUITE.format(pause=0.4), encoding="utf-8")
    run = tmp_path / "run"
    proc = _cli("run", str(suite), "--no-history", "--no-report", "--quick", "--seed", "3", "--out", str(run))
    _wait_for_results(run / rs.PARTIAL_FILE, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    hint = next(line for line in err.splitlines() if "--resume" in line)
    command = shlex.split(hint.split("`")[1])
    assert command[:2] == ["vemi-eval", "run"] and "--quick" in command and "--seed" in command
    doc = json.loads((run / rs.RESULTS_FILE).read_text(encoding="utf-8"))
    assert doc["status"] == "INCOMPLETE"  # what finished is on disk, the rest is listed as missing
    resumed = _cli(*command[1:], "--no-history", "--no-report")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert rs.read_results(run)["status"] == "VALID"

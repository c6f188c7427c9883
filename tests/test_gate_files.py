"""The gate as a CI step: exact gating of deterministic metrics, JUnit XML (parsed back), the
github-action-benchmark JSON, and runs through the real runner (a model whose step sleeps) gated against
themselves (pass) and against a deliberately slowed copy (fail)."""

from __future__ import annotations

import json
import math
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from vemi_eval import measurements
from vemi_eval.cli import main
from vemi_eval.gate import EXACT, IMPROVED, MANN_WHITNEY, NEW, OK, REGRESSION, Rules, compare, load_rules
from vemi_eval.gate_files import BIGGER, SMALLER, benchmark_entries, junit_xml
from vemi_eval.measurements import MeasurementSpec
from vemi_eval.recorded_run import run_suite
from vemi_eval.records import MetricRecord
from vemi_eval.runner import RunOptions


# --- a fake kind: one wall-clock timing, one deterministic count ------------------------------------------
class SleepyModel:
    """Stands in for a DuplexModel: one step sleeps ``pause_s`` (a slowed build sleeps longer)."""

    def __init__(self, pause_s: float, weight_bytes: int) -> None:
        self.pause_s, self.weight_bytes, self.flags = pause_s, weight_bytes, []

    def step(self) -> None:
        time.sleep(self.pause_s)

    def reset(self, mask=None) -> None:
        pass


def sleepy_build(pause_s: float, weight_bytes: int = 1000):
    return lambda spec: SleepyModel(pause_s, weight_bytes)


def timed(ctx):
    model = ctx.variant.build(batch_size=1)
    times = []
    for _ in range(int(ctx.params["n"])):
        t = time.perf_counter()
        model.step()
        times.append((time.perf_counter() - t) * 1e3)
    base = dict(suite=ctx.suite, variant=ctx.variant.name, higher_is_better=False)
    frames = {"frames": len(times), "duration_s": sum(times) / 1e3}
    steps_per_s = 1e3 / np.array(times)
    return [
        MetricRecord(metric="step_ms", value=float(np.median(times)), unit="ms", n=len(times),
                     samples=times, statistic="median", extra=frames, **base),
        MetricRecord(metric="weight_bytes", value=float(model.weight_bytes), unit="bytes", n=1, **base),
        MetricRecord(metric="steps_per_s", value=float(np.median(steps_per_s)), unit="1/s", n=len(times),
                     samples=steps_per_s.tolist(), statistic="median", suite=ctx.suite,
                     variant=ctx.variant.name, higher_is_better=True, ci_low=1.0, ci_high=3.0),
    ]  # fmt: skip


TIMED = MeasurementSpec("timed", timed, params={"n": 12}, exact_metrics=("weight_bytes",))

SUITE = '[suite]\nname = "sleepy"\ndescription = "a model whose step sleeps"\n[timed]\nn = 12\n'


@pytest.fixture
def sleepy(monkeypatch, tmp_path):
    monkeypatch.setattr(measurements, "load_all", lambda: {"timed": TIMED})
    suite = tmp_path / "sleepy.toml"
    suite.write_text(SUITE, encoding="utf-8")

    def run(name: str, pause_s: float, weight_bytes: int = 1000) -> str:
        opts = RunOptions(
            suite=str(suite),
            out=str(tmp_path / name),
            report=False,
            progress=False,
            history=False,
            build_fn=sleepy_build(pause_s, weight_bytes),
        )
        out = run_suite(opts, echo=lambda m: None)
        assert out.status == "VALID", out.results["invalid_reasons"]
        return str(tmp_path / name)

    return run


def _gate(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["gate", *args])
    return exc.value.code, capsys.readouterr().out


def _cases(path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert int(suite.get("tests")) == len(cases) == int(root.get("tests"))
    assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases.values())
    assert all(c.get("classname") for c in cases.values())
    return cases


def _check_benchmark_file(path) -> list[dict]:
    """github-action-benchmark's custom format: a list of {name, unit, value, range?, extra?}."""
    entries = json.loads(open(path, encoding="utf-8").read())
    assert isinstance(entries, list)
    for e in entries:
        assert set(e) <= {"name", "unit", "value", "range", "extra"} and {"name", "unit", "value"} <= set(e)
        assert isinstance(e["name"], str) and isinstance(e["unit"], str)
        assert isinstance(e["value"], (int, float)) and math.isfinite(e["value"])
        assert all(isinstance(e[k], str) for k in ("range", "extra") if k in e)
    assert len({e["name"] for e in entries}) == len(entries)
    return entries


def test_a_run_gated_against_itself_passes_and_a_slowed_copy_fails(sleepy, tmp_path, capsys) -> None:
    base = sleepy("base", pause_s=0.001)
    slow = sleepy("slow", pause_s=0.02)  # 20x: a loaded machine stretches short sleeps by a few ms
    junit, bench, bigger = (str(tmp_path / n) for n in ("junit.xml", "bench.json", "bigger.json"))

    code, out = _gate(capsys, base, "--baseline", f"{base}/results.json", "--junit", junit,
                      "--benchmark-json", bench, "--benchmark-json-bigger", bigger)  # fmt: skip
    assert code == 0, out
    cases = _cases(junit)
    assert set(cases) == {"baseline/step_ms", "baseline/weight_bytes", "baseline/steps_per_s"}
    assert all(c.find("failure") is None for c in cases.values())
    smaller = _check_benchmark_file(bench)
    assert {e["name"] for e in smaller} == {"sleepy: baseline/step_ms", "sleepy: baseline/weight_bytes"}
    (fast,) = _check_benchmark_file(bigger)
    assert fast["name"] == "sleepy: baseline/steps_per_s" and fast["range"] == "± 1"

    code, out = _gate(capsys, slow, "--baseline", base, "--junit", junit, "--benchmark-json", bench)
    assert code == 1 and "gate: FAILED" in out
    cases = _cases(junit)
    failure = cases["baseline/step_ms"].find("failure")
    assert failure is not None and cases["baseline/weight_bytes"].find("failure") is None
    msg = failure.get("message")
    for fact in ("baseline ", "current ", "ratio ", "test mann-whitney", "p="):
        assert fact in msg, msg
    ratio = float(msg.split("ratio ")[1].split(";")[0])
    assert ratio > 1.5  # 20 ms against 1 ms of sleep
    assert cases["baseline/steps_per_s"].find("failure") is not None  # the same slowdown, higher is better
    value = {e["name"]: e["value"] for e in _check_benchmark_file(bench)}["sleepy: baseline/step_ms"]
    assert value > 19.0


def test_a_deterministic_metric_gates_exactly(sleepy, tmp_path, capsys) -> None:
    """One byte more fails the gate though it is 0.1% (far below the 10% timing tolerance)."""
    base = sleepy("base", pause_s=0.001, weight_bytes=1000)
    heavier = sleepy("heavier", pause_s=0.001, weight_bytes=1001)
    junit = str(tmp_path / "junit.xml")
    code, out = _gate(capsys, heavier, "--baseline", base, "--junit", junit, "--threshold", "50%")
    assert code == 1, out
    failure = _cases(junit)["baseline/weight_bytes"].find("failure")
    assert failure is not None and "test exact" in failure.get("message")
    rules = tmp_path / "rules.toml"  # on another machine a user can gate it statistically
    rules.write_text('[[rules]]\nmetric = "weight_bytes"\nexact = false\n', encoding="utf-8")
    code, out = _gate(capsys, heavier, "--baseline", base, "--rules", str(rules), "--threshold", "50%")
    assert code == 0, out


def _record(metric: str, value: float, kind: str = "memory", higher: bool | None = False, **kw) -> dict:
    rec = MetricRecord("s", "v", metric, value, "bytes", 1, higher_is_better=higher, kind=kind, **kw)
    return rec.to_dict()


def _run_doc(*records: dict) -> dict:
    return {"status": "VALID", "suite": {"name": "s"}, "metrics": list(records), "environment": {}}


def test_exact_rules_of_registered_kinds() -> None:
    """memory's weight_bytes is declared exact, its peak RSS is not; the tiny float tolerance holds."""
    base = _run_doc(_record("weight_bytes", 1e6), _record("peak_rss_increase_bytes", 1e6))
    cur = _run_doc(_record("weight_bytes", 1e6 * (1 + 1e-9)), _record("peak_rss_increase_bytes", 1.05e6))
    rows = {r.metric: r for r in compare(cur, base).rows}
    assert rows["weight_bytes"].test == EXACT and rows["weight_bytes"].verdict == OK
    assert rows["peak_rss_increase_bytes"].test != EXACT and rows["peak_rss_increase_bytes"].verdict == OK
    cur = _run_doc(_record("weight_bytes", 1e6 + 2), _record("peak_rss_increase_bytes", 1e6))
    assert {r.metric: r.verdict for r in compare(cur, base).rows}["weight_bytes"] == REGRESSION
    cur = _run_doc(_record("weight_bytes", 0.5e6), _record("peak_rss_increase_bytes", 1e6))
    assert {r.metric: r.verdict for r in compare(cur, base).rows}["weight_bytes"] == IMPROVED
    # a deterministic metric without a direction fails on any change; a rule loosens the tolerance
    b = _run_doc(_record("token_agreement", 0.9, kind="fidelity", higher=None))
    c = _run_doc(_record("token_agreement", 0.91, kind="fidelity", higher=None))
    assert compare(c, b).failed and not compare(b, b).failed
    assert not compare(c, b, Rules(exact_tolerance=0.05)).failed


def test_junit_and_benchmark_entries_for_every_verdict(tmp_path) -> None:
    rng = np.random.default_rng(0)
    slow, fast = rng.normal(20, 1, 50), rng.normal(10, 1, 50)
    base = _run_doc(
        _record("weight_bytes", 100.0),
        _record("step_ms", 10.0, kind="latency", samples=fast.tolist()),
        _record("gone_ms", 1.0, kind="latency"),
        _record("odd", 1.0, kind="latency", higher=None),
    )
    cur = _run_doc(
        _record("weight_bytes", 100.0),
        _record("step_ms", 20.0, kind="latency", samples=slow.tolist()),
        _record("odd", 5.0, kind="latency", higher=None),
        _record("new_ms", 3.0, kind="latency"),
    )
    res = compare(cur, base, load_rules(None, ["5%"]))
    verdicts = {r.metric: (r.verdict, r.test) for r in res.rows}
    assert verdicts["step_ms"] == (REGRESSION, MANN_WHITNEY) and verdicts["weight_bytes"] == (OK, EXACT)
    assert verdicts["gone_ms"][0] == REGRESSION and verdicts["new_ms"][0] == NEW
    path = tmp_path / "j.xml"
    path.write_text(junit_xml(res), encoding="utf-8")
    cases = _cases(path)
    assert cases["v/gone_ms"].find("failure").get("message").endswith("missing from the run")
    assert cases["v/new_ms"].find("skipped") is not None and cases["v/odd"].find("skipped") is not None
    assert cases["v/weight_bytes"].find("failure") is None
    names = {e.name for e in benchmark_entries(res, SMALLER)}
    assert names == {"s: v/weight_bytes", "s: v/step_ms", "s: v/new_ms"}  # current values only
    assert benchmark_entries(res, BIGGER) == []


def test_unwritable_outputs_are_refused_before_the_gate(tmp_path, capsys) -> None:
    doc = tmp_path / "r.json"
    doc.write_text(json.dumps({"schema": "vemi-eval/results", "schema_version": 2, **_run_doc()}))
    with pytest.raises(SystemExit) as exc:
        main(["gate", str(doc), "--baseline", str(doc), "--junit", str(tmp_path / "no" / "j.xml")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: cannot write JUnit XML") and err.count("\n") == 1


def _workflow_commands(text: str) -> list[str]:
    """The ``run:`` commands of a workflow file (plain and ``>-`` folded), without a YAML parser."""
    lines, out = text.splitlines(), []
    for i, line in enumerate(lines):
        key, _, value = line.strip().partition("run: ")
        if key or not value:
            continue
        if value.strip() != ">-":
            out.append(value.strip())
            continue
        indent = len(line) - len(line.lstrip())
        folded = []
        for nxt in lines[i + 1 :]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            folded.append(nxt.strip())
        out.append(" ".join(folded))
    return out


def test_the_example_workflow_calls_real_commands_and_options() -> None:
    """Every vemi-eval command of .github/workflows/vemi-eval-gate.yml parses with today's CLI."""
    import shlex
    from pathlib import Path

    from vemi_eval.cli.gate import gate_cmd
    from vemi_eval.cli.run import run_cmd

    text = (Path(__file__).parents[1] / ".github" / "workflows" / "vemi-eval-gate.yml").read_text()
    commands = [shlex.split(c) for c in _workflow_commands(text) if c.startswith(".venv/bin/vemi-eval")]
    by_name = {c[1]: c[2:] for c in commands}
    assert set(by_name) == {"run", "gate"}
    assert by_name["run"][:2] == ["matrix", "--quick"]
    run_cmd.make_context("run", list(by_name["run"]))
    ctx = gate_cmd.make_context("gate", list(by_name["gate"]))
    assert ctx.params["junit"] and ctx.params["benchmark_json"] and ctx.params["benchmark_json_bigger"]
    assert ctx.params["baseline"] == "reports/matrix-tiny-quick/results.json"
    rules = load_rules(Path(__file__).parents[1] / ctx.params["rules"])  # the shipped rules file loads
    assert rules.for_metric("int8", "peak_rss_increase_bytes").tolerance == 0.5

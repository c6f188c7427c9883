"""The regression gate: a 30% regression fails (exit 1), noise passes (exit 0), rules and edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vemi_eval.cli import main
from vemi_eval.gate import (
    IMPROVED,
    NEW,
    NOT_GATED,
    OK,
    REGRESSION,
    GateRulesError,
    Rules,
    compare,
    load_rules,
)


def _doc(samples_by_metric: dict[str, np.ndarray], status: str = "VALID") -> dict:
    metrics = []
    for metric, s in samples_by_metric.items():
        higher = metric.startswith("throughput")
        metrics.append(
            {
                "suite": "latency",
                "variant": "baseline",
                "metric": metric,
                "value": float(np.median(s)),
                "unit": "ms",
                "n": len(s),
                "ci_low": None,
                "ci_high": None,
                "status": "ok",
                "reason": "",
                "condition": {"batch_size": 1},
                "higher_is_better": higher,
                "ratio_to_baseline": None,
                "ratio_ci_low": None,
                "ratio_ci_high": None,
                "extra": {"samples": [float(x) for x in s], "statistic": "median"},
            }
        )
    return {
        "schema": "vemi-eval/results",
        "schema_version": 1,
        "status": status,
        "invalid_reasons": [],
        "quick": False,
        "environment": {"cpu": "x"},
        "metrics": metrics,
    }


def _write(path, doc) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def _gate(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["gate", *args])
    return exc.value.code, capsys.readouterr().out


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    base = {"step_ms": rng.lognormal(np.log(20), 0.15, 200), "throughput": rng.normal(100, 5, 200)}
    noise = {"step_ms": rng.lognormal(np.log(20), 0.15, 200), "throughput": rng.normal(100, 5, 200)}
    slow = {"step_ms": rng.lognormal(np.log(20), 0.15, 200) * 1.3, "throughput": rng.normal(100, 5, 200)}
    return {
        k: _write(tmp_path / f"{k}.json", _doc(v))
        for k, v in {"base": base, "noise": noise, "slow": slow}.items()
    }


def test_gate_fails_on_an_injected_30_percent_regression(runs, capsys) -> None:
    code, out = _gate(capsys, runs["slow"], "--baseline", runs["base"])
    assert code == 1
    assert "REGRESSION" in out and "step_ms" in out and "gate: FAILED" in out


def test_gate_passes_on_noise(runs, capsys) -> None:
    code, out = _gate(capsys, runs["noise"], "--baseline", runs["base"], "--all")
    assert code == 0, out
    assert "gate: passed" in out


def test_tolerance_above_the_change_passes_and_rules_file(runs, tmp_path, capsys) -> None:
    code, _ = _gate(capsys, runs["slow"], "--baseline", runs["base"], "--threshold", "50%")
    assert code == 0
    code, _ = _gate(capsys, runs["slow"], "--baseline", runs["base"], "--threshold", "step_*=0.5")
    assert code == 0
    rules = tmp_path / "rules.toml"
    rules.write_text('[default]\ntolerance = 0.05\n[[rules]]\nmetric = "step_ms"\nignore = true\n')
    code, _ = _gate(capsys, runs["slow"], "--baseline", runs["base"], "--rules", str(rules))
    assert code == 0
    rules.write_text("[default]\ntolerance = 0.05\nbogus = 1\n")
    with pytest.raises(SystemExit) as exc:
        main(["gate", runs["slow"], "--baseline", runs["base"], "--rules", str(rules)])
    assert exc.value.code == 2 and "unknown key 'bogus'" in capsys.readouterr().err


def test_missing_metric_invalid_run_and_no_samples() -> None:
    rng = np.random.default_rng(1)
    base = _doc({"step_ms": rng.normal(10, 1, 50), "other_ms": rng.normal(10, 1, 50)})
    cur = _doc({"step_ms": rng.normal(10, 1, 50)})
    res = compare(cur, base, Rules())
    assert res.failed and any(r.metric == "other_ms" and r.reason == "missing from the run" for r in res.rows)
    res = compare(
        _doc({"step_ms": rng.normal(10, 1, 50)}, status="INVALID"), _doc({"step_ms": rng.normal(10, 1, 50)})
    )
    assert res.failed and res.rows[0].metric == "run status"
    # without raw samples the tolerance alone decides
    b, c = _doc({"step_ms": np.array([10.0])}), _doc({"step_ms": np.array([12.0])})
    assert compare(c, b, Rules(tolerance=0.1)).failed
    assert not compare(c, b, Rules(tolerance=0.25)).failed
    # a large change that the samples do not support is not a regression
    b = _doc({"step_ms": np.array([1.0, 100.0, 1.0, 100.0])})
    c = _doc({"step_ms": np.array([1.0, 100.0, 100.0, 1.0, 100.0])})
    rows = compare(c, b).rows
    assert [r.verdict for r in rows] == [OK] and "not significant" in rows[0].reason


def test_bad_inputs_are_exit_2(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["gate", str(tmp_path / "nope"), "--baseline", str(tmp_path / "nope2")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no results at") and err.count("\n") == 1
    with pytest.raises(GateRulesError):
        load_rules(None, ["ten percent"])


def _by_metric(res) -> dict:
    return {r.metric: r for r in res.rows}


def test_directions_and_every_verdict(tmp_path) -> None:
    """Lower-is-better and higher-is-better both gate the bad direction only; an improvement, a metric
    new in the run and one without a direction each get their own verdict."""
    rng = np.random.default_rng(2)
    n = 200
    base = _doc({"step_ms": rng.lognormal(np.log(20), 0.1, n), "throughput": rng.normal(100, 3, n)})
    # throughput (higher is better) falls 30%: a regression; step_ms falls 30%: an improvement
    cur = _doc({"step_ms": rng.lognormal(np.log(14), 0.1, n), "throughput": rng.normal(70, 3, n)})
    rows = _by_metric(compare(cur, base))
    assert rows["throughput"].verdict == REGRESSION and rows["step_ms"].verdict == IMPROVED
    # the mirror image: throughput rises (improved), step_ms rises (regression)
    cur = _doc({"step_ms": rng.lognormal(np.log(28), 0.1, n), "throughput": rng.normal(130, 3, n)})
    rows = _by_metric(compare(cur, base))
    assert rows["throughput"].verdict == IMPROVED and rows["step_ms"].verdict == REGRESSION
    # new in the run, and no direction (higher_is_better unset)
    cur = _doc({"step_ms": rng.lognormal(np.log(20), 0.1, n), "throughput": rng.normal(100, 3, n),
                "extra_ms": rng.normal(5, 1, n)})  # fmt: skip
    for m in cur["metrics"] + base["metrics"]:
        if m["metric"] == "throughput":
            m["higher_is_better"] = None
    rows = _by_metric(compare(cur, base))
    assert rows["extra_ms"].verdict == NEW and rows["throughput"].verdict == NOT_GATED


def test_rules_file_alpha_and_better(tmp_path) -> None:
    rng = np.random.default_rng(3)
    base = _doc({"throughput": rng.normal(100, 20, 12)})
    cur = _doc({"throughput": rng.normal(80, 20, 12)})
    for d in (base, cur):  # no direction recorded: only a rule's `better` can gate it
        d["metrics"][0]["higher_is_better"] = None
    assert _by_metric(compare(cur, base)).get("throughput").verdict == NOT_GATED
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nmetric = "throughput"\nbetter = "higher"\nalpha = 0.5\ntolerance = 0.05\n')
    row = _by_metric(compare(cur, base, load_rules(path)))["throughput"]
    assert row.verdict == REGRESSION and row.p_value is not None and row.p_value < 0.5
    path.write_text('[[rules]]\nmetric = "throughput"\nbetter = "higher"\nalpha = 1e-12\ntolerance = 0.05\n')
    row = _by_metric(compare(cur, base, load_rules(path)))["throughput"]
    assert row.verdict == OK and "not significant" in row.reason  # the same change, a stricter alpha
    path.write_text('[[rules]]\nmetric = "throughput"\nbetter = "lower"\nalpha = 0.5\ntolerance = 0.05\n')
    assert _by_metric(compare(cur, base, load_rules(path)))["throughput"].verdict == IMPROVED

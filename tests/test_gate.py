"""The regression gate: a 30% regression fails (exit 1), noise passes (exit 0), rules and edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vemi_eval.cli import main
from vemi_eval.gate import REGRESSION, GateRulesError, Rules, compare, load_rules


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
    assert [r.verdict for r in compare(c, b).rows] != [REGRESSION]


def test_bad_inputs_are_exit_2(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["gate", str(tmp_path / "nope"), "--baseline", str(tmp_path / "nope2")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no results at") and err.count("\n") == 1
    with pytest.raises(GateRulesError):
        load_rules(None, ["ten percent"])

"""The gate survives a shared runner: timings of a variant gate by its ratio to the baseline measured side
by side in the same run (tolerance: the A/A control's spread), not by absolute times across runs.

The committed quick matrix (reports/matrix-tiny-quick, the workflow's baseline) is the data: a copy whose
every timing is twice as slow (a loaded runner) but whose ratios agree must pass with no regression, the
baseline's moved timings read as drift; a variant slowed in one stage (its ratio up 30%) must fail, and
so must a deterministic metric that changed. No model runs here."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from vemi_eval.cli import main
from vemi_eval.gate import DRIFT, NOT_GATED, OK, RATIO, REGRESSION, Rules, compare, load_rules
from vemi_eval.gate_ratios import combined_band, side_by_side
from vemi_eval.measurements import is_exact

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "reports" / "matrix-tiny-quick" / "results.json"
RULES = ROOT / ".github" / "vemi-eval-gate-rules.toml"


@pytest.fixture(scope="module")
def quick() -> dict:
    return json.loads(QUICK.read_text(encoding="utf-8"))


def _timing(m: dict) -> bool:
    """A wall-clock value: what a loaded runner slows (counts, shares and bytes it does not)."""
    ok = m.get("status") == "ok" and m.get("value") is not None and not is_exact(m["kind"], m["metric"])
    return ok and m.get("unit") in ("ms", "s", "frames/s", "x")


def _scaled(doc: dict, factor: float) -> dict:
    """Every noisy value (and its samples and interval) of every variant slower by ``factor`` (faster
    throughput); the ratios to the interleaved baseline, measured side by side, unchanged."""
    out = copy.deepcopy(doc)
    for m in out["metrics"]:
        if not _timing(m):
            continue
        f = 1.0 / factor if m.get("higher_is_better") else factor
        m["value"] *= f
        for k in ("ci_low", "ci_high"):
            if m.get(k) is not None:
                m[k] *= f
        if isinstance(m.get("samples"), list):
            m["samples"] = [x * f for x in m["samples"]]
    return out


def test_twice_as_slow_with_the_same_ratios_passes(quick: dict) -> None:
    slow = _scaled(quick, 2.0)
    res = compare(slow, quick, load_rules(RULES))
    failed = [(r.variant, r.metric, r.reason) for r in res.rows if r.verdict == REGRESSION]
    assert not failed, failed[:5]
    ratio_rows = [r for r in res.rows if r.test == RATIO]
    assert len(ratio_rows) > 100 and all(r.verdict == OK for r in ratio_rows)
    drift = [r for r in res.rows if r.verdict == DRIFT]
    assert drift and all(r.reason.startswith("environment drift") for r in drift)
    # the baseline's own timings, and a variant's timing that has no ratio (compile time), divided by the
    # run's drift (its baseline's timings, median x2)
    assert {r.variant for r in drift} == {"baseline", "compile"}
    compile_s = next(r for r in drift if r.metric == "compile_s")
    assert "+0.0% after the run's drift (the baseline's timings x2" in compile_s.reason
    # the A/A control is the tolerance, not a gated variant
    aa = [r for r in res.rows if r.variant == "baseline-again" and not r.test]
    assert aa and all(r.verdict == NOT_GATED for r in aa)
    # without the ratios (a run made before interleaving) the absolute test fails dozens of timings
    absolute = compare(_strip_ratios(slow), _strip_ratios(quick), load_rules(RULES))
    assert sum(r.verdict == REGRESSION for r in absolute.rows) > 40


def _strip_ratios(doc: dict) -> dict:
    out = copy.deepcopy(doc)
    for m in out["metrics"]:
        m["ratio_to_baseline"] = None
    return out


def test_a_variant_slowed_in_one_stage_fails(quick: dict) -> None:
    slowed = _scaled(quick, 2.0)  # a loaded runner as well: only the ratio can tell
    lm = {"stage": "lm"}
    for m in slowed["metrics"]:  # a sleep in int8's LM stage: 30% slower than its interleaved baseline
        if m["variant"] == "int8" and m["metric"] == "frame_time_p50_ms" and m["condition"] == lm:
            m["value"] *= 1.3
            m["ratio_to_baseline"] *= 1.3
    res = compare(slowed, quick, load_rules(RULES))
    failed = [r for r in res.rows if r.verdict == REGRESSION]
    assert [(r.variant, r.metric, r.condition, r.test) for r in failed] == [
        ("int8", "frame_time_p50_ms", lm, RATIO)
    ]
    r0 = next(
        m["ratio_to_baseline"]
        for m in quick["metrics"]
        if m["variant"] == "int8" and m["metric"] == "frame_time_p50_ms" and m["condition"] == lm
    )
    assert f"ratio to the run's baseline x{r0:.3g} -> x{r0 * 1.3:.3g}, +30.0%" in failed[0].reason
    assert "A/A band" in failed[0].reason


def test_a_changed_deterministic_metric_still_fails(quick: dict) -> None:
    changed = copy.deepcopy(quick)
    for m in changed["metrics"]:
        if m["variant"] == "int4" and m["metric"] == "weight_bytes":
            m["value"] += 4096  # 4 KiB more weights: bytes are whole numbers, gated exactly
        if m["variant"] == "codec-int4" and m["metric"] == "stoi":
            m["value"] -= 1.5e-4  # the cross-CPU move of a float score: inside float_tolerance
    rows = {(r.variant, r.metric): r for r in compare(changed, quick, load_rules(RULES)).rows}
    assert rows[("int4", "weight_bytes")].verdict == REGRESSION
    assert rows[("codec-int4", "stoi")].verdict == OK
    assert compare(changed, quick, Rules()).failed  # without the rules file's float tolerance: exact


def test_the_aa_band_sets_the_tolerance_and_a_single_variant_suite_stays_absolute(quick: dict) -> None:
    sbs = side_by_side(quick)
    assert sbs.baseline == "baseline" and sbs.aa == {"baseline-again"} and not sbs.single_variant
    lm_p50 = {"metric": "frame_time_p50_ms", "condition": {"stage": "lm"}}
    aa = next(
        m
        for m in quick["metrics"]
        if m["variant"] == "baseline-again" and {k: m[k] for k in lm_p50} == lm_p50
    )
    band = sbs.aa_band(lm_p50)  # the A/A ratio's interval, as far as it reaches from 1
    assert band == pytest.approx(max(1 - aa["ratio_ci_low"], aa["ratio_ci_high"] - 1), abs=1e-3)
    assert combined_band(band, band) == pytest.approx(band * 2**0.5)
    assert combined_band(None, None) is None
    one = {k: v for k, v in quick.items() if k != "variants"}
    one["metrics"] = [m for m in quick["metrics"] if m["variant"] == "baseline"]
    res = compare(_scaled(one, 2.0), one, load_rules(RULES))
    assert any("single-variant suite" in n for n in res.notes)
    assert res.failed and not any(r.test == RATIO for r in res.rows)


def test_cli_gate_passes_on_a_loaded_runner(quick: dict, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(_scaled(quick, 2.0)))
    with pytest.raises(SystemExit) as exc:
        main(["gate", str(run), "--baseline", str(QUICK), "--rules", str(RULES)])
    out = capsys.readouterr().out
    assert exc.value.code == 0, out
    assert "gate: passed" in out and " drift" in out

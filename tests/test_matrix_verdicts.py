"""Verdicts a reader can act on: one matrix row per context (never a range across a trained tiny LM and
random 7B-shaped weights), proxies named, random weights not applicable, INVALID runs without a verdict,
exact values with a stated tolerance, underpowered comparisons (A/A or seeds) and unconverged baselines
called so. Results written by hand: no model runs here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vemi_eval import registry
from vemi_eval.claim_verdicts import (
    EXACT_TOLERANCE,
    ClaimBar,
    Evidence,
    judge,
    mde_from_aa,
    mde_from_seeds,
    overall,
)
from vemi_eval.training_budget import CONVERGED_FALL_SHARE, convergence

LM = {"stage": "lm"}


def _rec(variant, metric, value, *, ratio=None, lo=None, hi=None, kind="latency", cond=None, **kw):
    return {
        "suite": "matrix", "variant": variant, "metric": metric, "value": value, "status": "ok",
        "condition": cond if cond is not None else LM, "kind": kind, "ratio_to_baseline": ratio,
        "ratio_ci_low": lo, "ratio_ci_high": hi, "ci_low": None, "ci_high": None, **kw,
    }  # fmt: skip


def _run(path, lm, dtype, weights, variants, metrics, status="VALID", reasons=(), cpu="AMD EPYC"):
    base = {
        "name": "baseline",
        "flags": [],
        "is_baseline": True,
        "lm": lm,
        "dtype": dtype,
        "weights": weights,
    }
    vs = [base] + [{**base, "name": n, "flags": f, "is_baseline": False} for n, f in variants.items()]
    vs.append({**base, "name": "baseline-again", "is_baseline": False, "aa": True})
    return {
        "_path": str(path), "suite": {"name": "matrix"}, "status": status, "invalid_reasons": list(reasons),
        "model": {"lm": lm, "device": "cpu", "dtype": dtype}, "threads": 1,
        "environment": {"cpu": cpu, "gpu": None}, "variants": vs, "metrics": metrics,
    }  # fmt: skip


def _aa(lo=0.97, hi=1.03, ratio=1.0):
    return _rec("baseline-again", "frame_time_p50_ms", 40.0, ratio=ratio, lo=lo, hi=hi)


def _rows(results, eid, claim=0):
    by_id = {r["id"]: r for r in registry.priority_matrix(results)}
    return by_id[eid]["claims"][claim]["rows"]


def test_one_row_per_context_never_a_range_across_them(tmp_path: Path) -> None:
    spec = {"speculative-4": ["speculative=4"]}
    tiny = _run(
        tmp_path / "tiny",
        "tiny",
        "float32",
        "trained",
        spec,
        [_rec("speculative-4", "frame_time_p50_ms", 60, ratio=1.48, lo=1.43, hi=1.6), _aa()],
    )
    big = _run(
        tmp_path / "7b",
        "moshi-7b-shaped",
        "bfloat16",
        "random",
        spec,
        [_rec("speculative-4", "frame_time_p50_ms", 900, ratio=25.2, lo=24.0, hi=26.0), _aa()],
    )
    rows = _rows([tiny, big], "1.2")
    assert [r["context"] for r in rows] == [
        "cpu (AMD EPYC); 1 thread; float32; tiny; trained",
        "cpu (AMD EPYC); 1 thread; bfloat16; moshi-7b-shaped; random",
    ]
    assert [len(r["measurements"]) for r in rows] == [1, 1]
    assert rows[0]["verdict"] == "falls short"
    assert rows[1]["verdict"].startswith("not applicable: random weights")
    # the claim's own verdict does not pool them either
    claim = {r["id"]: r for r in registry.priority_matrix([tiny, big])}["1.2"]["claims"][0]
    assert claim["verdict"] == "by context"


def test_proxies_say_what_they_measured_and_the_real_thing_is_judged(tmp_path: Path) -> None:
    att = {"context": 3000}
    eager = _run(tmp_path / "a", "tiny", "float32", "trained", {"attn-eager": ["attn=eager"]},
                 [_rec("attn-eager", "attention_time", 2.5, ratio=2.5, lo=2.2, hi=2.8, kind="attention",
                       cond=att)])  # fmt: skip
    (row,) = _rows([eager], "2.2")
    assert row["verdict"] == "proxy: sdpa against eager attention (flash-attn did not run)"
    flash = _run(tmp_path / "b", "tiny", "float32", "trained", {"attn-flash": ["attn=flash"]},
                 [_rec("attn-flash", "attention_time", 0.4, ratio=0.4, lo=0.35, hi=0.45, kind="attention",
                       cond=att)])  # fmt: skip
    flash["variants"][0]["flags"] = ["attn=eager"]  # the attention suite's shape: eager is the baseline
    (row,) = _rows([flash], "2.2")
    assert row["verdict"] == "meets"
    compiled = _run(
        tmp_path / "c",
        "tiny",
        "float32",
        "trained",
        {"compile": ["compile"]},
        [_rec("compile", "frame_time_p50_ms", 27, ratio=0.68, lo=0.63, hi=0.73), _aa()],
    )
    (row,) = _rows([compiled], "5.3", claim=1)
    assert row["verdict"] == "proxy: torch.compile of the streaming parts (CUDA graphs did not run)"


def test_an_invalid_run_gives_no_verdict_and_says_why(tmp_path: Path) -> None:
    run = _run(tmp_path / "x", "tiny", "float32", "trained", {"gqa-4": ["gqa=4"]},
               [_rec("gqa-4", "frame_time_p50_ms", 20, ratio=0.6, lo=0.55, hi=0.65)],
               status="INVALID", reasons=["latency: 12 frames < min_frames 30"])  # fmt: skip
    (row,) = _rows([run], "2.1")
    assert row["verdict"] == "no verdict: the run is INVALID (latency: 12 frames < min_frames 30)"


def test_exact_values_have_a_stated_tolerance(tmp_path: Path) -> None:
    kv = _rec("gqa-4", "kv_cache_bytes_per_stream", 254, ratio=0.254, kind="memory", cond={})
    run = _run(tmp_path / "g", "tiny", "float32", "trained", {"gqa-4": ["gqa=4"]}, [kv])
    (row,) = _rows([run], "2.1", claim=1)
    assert row["verdict"] == f"meets: exact, {EXACT_TOLERANCE:.0%} tolerance"  # 0.254 against 0.25
    bar = ClaimBar(0.25, "lower")
    assert judge(bar, Evidence(0.2551, None, None, exact=True)).kind == "falls short"  # beyond 2%
    assert judge(bar, Evidence(0.254, None, None, exact=False)).text == "falls short (no CI)"


def test_underpowered_when_the_claim_is_smaller_than_the_aa_mde(tmp_path: Path) -> None:
    kv = {"kv-compress": ["kv-compress=int8"]}
    measured = _rec("kv-compress", "frame_time_p50_ms", 30, ratio=0.95, lo=0.8, hi=1.1)
    noisy = _run(tmp_path / "n", "tiny", "float32", "trained", kv, [measured, _aa(0.8, 1.25)])
    (row,) = _rows([noisy], "1.3")  # "15-25% faster": bar 0.85, effect 15%
    mde = mde_from_aa(1.0, 0.8, 1.25)
    assert mde > 0.15 and row["mde"] == pytest.approx(mde)
    assert row["verdict"] == f"underpowered: claimed effect 15% < MDE {mde:.0%} (A/A control)"
    quiet = _run(tmp_path / "q", "tiny", "float32", "trained", kv, [measured, _aa(0.99, 1.01)])
    (row,) = _rows([quiet], "1.3")
    assert row["verdict"] == "inconclusive" and row["mde"] < 0.15
    # an A/A ratio away from 1 is drift its interval did not show: it widens the MDE
    assert mde_from_aa(1.2, 1.19, 1.21) > mde_from_aa(1.0, 0.99, 1.01)
    assert mde_from_aa(1.0, None, None) is None


def test_seed_mde_and_convergence() -> None:
    # two seeds per arm, variance 0.0002 each: se of the difference sqrt(2 * 0.0002 / 2); / baseline 0.5
    got = mde_from_seeds([0.49, 0.51], [0.49, 0.51])
    assert got == pytest.approx(2.8016 * 0.0002**0.5 / 0.5, rel=1e-3)
    assert mde_from_seeds([0.5], [0.5, 0.6]) is None  # one seed: no spread to read
    falling = [{"step": 25, "text": 2.0}, {"step": 50, "text": 1.0}, {"step": 75, "text": 0.8}]
    c = convergence(falling, 80)  # 80% of 80 = 64: from step 50 to 75, the loss fell 20%
    assert c is not None and not c.converged and c.fall_share == pytest.approx(0.2)
    flat = [{"step": 50, "text": 1.0}, {"step": 75, "text": 1.0 - CONVERGED_FALL_SHARE / 2}]
    assert convergence(flat, 80).converged
    assert convergence([{"step": 25, "text": 1.0}], 25) is None  # one logged point: cannot tell


def _arm_sidecar(path: Path, stem: str, history: list[dict], steps: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    doc = {"steps": steps, "wall_time_s": 60.0, "device": "cpu", "threads": 1, "loss_history": history,
           "weights_sha256": stem * 8}  # fmt: skip
    (path / f"{stem}.json").write_text(json.dumps(doc))


def test_a_training_row_whose_baseline_arm_did_not_converge_is_underpowered(tmp_path: Path) -> None:
    run_dir = tmp_path / "exp"
    falling = [{"step": 25, "text": 2.0}, {"step": 50, "text": 1.0}, {"step": 75, "text": 0.8}]
    for stem in ("base0", "base1", "aug0", "aug1"):
        _arm_sidecar(run_dir / "trainings", stem, falling, 80)
    acc = {"user_channel": "white", "snr_db": 5.0}
    rec = _rec("noise-aug", "tf_answer_error_rate", 0.7, ratio=1.05, lo=0.9, hi=1.2, kind="lm_heldout",
               cond=acc)  # fmt: skip
    run = _run(run_dir / "results.json", "tiny", "float32", "trained", {"noise-aug": []}, [rec])
    run["variants"] = [v for v in run["variants"] if not v.get("aa")]
    run["variants"][0]["lm_checkpoint"] = ["/x/base0.safetensors", "/x/base1.safetensors"]
    run["variants"][1].update(lm_checkpoint=["/x/aug0.safetensors", "/x/aug1.safetensors"],
                              trained_with=["noise-aug"])  # fmt: skip
    (row,) = _rows([run], "6.3")
    assert row["verdict"] == "underpowered: baseline not converged"
    assert "baseline: 80 steps, 1.0 CPU-min, not converged" in row["context"]
    assert "2 seeds: aug0aug0, aug1aug1" in row["context"]


def test_one_verdict_per_row() -> None:
    assert overall(["meets", "meets (no CI)"]) == "meets"
    assert overall(["meets", "falls short"]) == "mixed"
    assert overall(["falls short", "inconclusive"]) == "inconclusive"
    assert overall(["underpowered", "underpowered"]) == "underpowered"
    assert overall(["proxy", "proxy"]) == "proxy"
    assert overall(["proxy", "meets"]) == "meets"  # a judged value outweighs a stand-in
    assert overall([]) == "not measured"

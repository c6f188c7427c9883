"""Variants that differ by model: a variant's own config, checkpoints (one per training seed: replicates,
pooled into its records), dtype; checked before any work; written in results.json with what the
checkpoints were trained with; the registry attributes a variant by ``trained_with``; an A/A variant is
never attributed. Real builds of a micro LM config (a few MB of random weights written to tmp)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from reference_model import CheckpointError, ConfigError
from vemi_eval import measurements, registry
from vemi_eval.errors import SuiteError
from vemi_eval.measurements import MeasurementSpec
from vemi_eval.recorded_run import run_suite
from vemi_eval.records import MetricRecord
from vemi_eval.results import read_results
from vemi_eval.runner import RunOptions
from vemi_eval.suites import parse_suite

PRESET = Path(__file__).resolve().parent.parent / "reference_model" / "presets" / "tiny_lm.json"
MICRO = {"dim": 32, "num_heads": 2, "num_layers": 1, "depformer_dim": 32, "depformer_dim_feedforward": 64}
MICRO |= {"depformer_num_heads": 2, "depformer_num_layers": 1}


def weight_stats(ctx):
    """Per-tensor mean |w| of the variant's LM (samples: which weights were loaded), and its size."""
    model = ctx.variant.build()
    per_tensor = [float(p.detach().abs().mean()) for p in model.lm.parameters()]
    n_params = sum(p.numel() for p in model.lm.parameters())
    return [
        MetricRecord(ctx.suite, ctx.variant.name, "mean_abs_weight", float(np.mean(per_tensor)), "",
                     len(per_tensor), samples=per_tensor, statistic="mean"),
        MetricRecord(ctx.suite, ctx.variant.name, "lm_parameters", float(n_params), "", 1),
        MetricRecord(ctx.suite, ctx.variant.name, "lm_dtype_is_bf16",
                     float(next(model.lm.parameters()).dtype == torch.bfloat16), "", 1),
    ]  # fmt: skip


WEIGHT_STATS = MeasurementSpec("weights", weight_stats, params={})


@pytest.fixture
def kinds(monkeypatch, tmp_path):
    monkeypatch.setattr(measurements, "load_all", lambda: {"weights": WEIGHT_STATS})
    monkeypatch.setenv("VEMI_HISTORY", str(tmp_path / "history.sqlite"))


def micro_config(tmp_path: Path) -> Path:
    cfg = json.loads(PRESET.read_text()) | MICRO
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(cfg))
    return path


def checkpoint(tmp_path: Path, name: str, seed: int, trained_with: list[str] | None = None) -> Path:
    """Random micro-LM weights from ``seed`` as safetensors, with a sidecar when ``trained_with``."""
    from reference_model.checkpoint import save
    from reference_model.config import load_lm_config
    from reference_model.lm.model import LMModel

    torch.manual_seed(seed)
    path = tmp_path / f"{name}.safetensors"
    save(LMModel(load_lm_config(micro_config(tmp_path))), path)
    if trained_with is not None:
        (tmp_path / f"{name}.json").write_text(json.dumps({"recipe": "test", "trained_with": trained_with}))
    return path


def suite_text(variants: str) -> str:
    return (
        textwrap.dedent(
            """\
        [suite]
        name = "by-model"
        description = "variants that differ by checkpoint"

        [model]
        lm = "micro.json"
        codec = "tiny"
        lm_checkpoint = "base.safetensors"

        [[variants]]
        name = "baseline"
        """
        )
        + textwrap.dedent(variants)
        + "\n[weights]\n"
    )


def run(tmp_path: Path, text: str):
    (tmp_path / "s.toml").write_text(text)
    opts = RunOptions(suite=str(tmp_path / "s.toml"), out=str(tmp_path / "run"), report=False,
                      progress=False, history_path=tmp_path / "h.sqlite")  # fmt: skip
    return run_suite(opts, echo=lambda m: None)


def test_variant_with_its_own_checkpoints_runs_pooled_over_replicates(tmp_path, kinds) -> None:
    checkpoint(tmp_path, "base", 0)
    checkpoint(tmp_path, "seed1", 1, trained_with=["noise-aug"])
    checkpoint(tmp_path, "seed2", 2, trained_with=["noise-aug"])
    out = run(
        tmp_path,
        suite_text("""
        [[variants]]
        name = "recipe-a"
        lm_checkpoint = ["seed1.safetensors", "seed2.safetensors"]
        dtype = "bfloat16"

        [[variants]]
        name = "again"
        aa = true
        """),
    )
    assert out.status == "VALID", out.results["invalid_reasons"]
    doc = read_results(tmp_path / "run")
    facts = {v["name"]: v for v in doc["variants"]}
    a = facts["recipe-a"]
    assert a["replicates"] == 2 and a["lm_checkpoint"] == [str(tmp_path / "seed1.safetensors"),
                                                           str(tmp_path / "seed2.safetensors")]  # fmt: skip
    assert a["trained_with"] == ["noise-aug"] and a["dtype"] == "bfloat16" and a["lm"].endswith("micro.json")
    assert facts["baseline"]["trained_with"] == [] and facts["again"]["aa"] is True
    assert facts["again"]["lm_checkpoint"] == facts["baseline"]["lm_checkpoint"]  # the baseline again

    rec = {(m["variant"], m["metric"]): m for m in doc["metrics"]}
    pooled = rec[("recipe-a", "mean_abs_weight")]
    reps = pooled["replicates"]
    assert [r["replicate"] for r in reps] == [0, 1] and reps[0]["value"] != reps[1]["value"]
    n = reps[0]["n"]
    assert pooled["n"] == 2 * n and len(pooled["samples"]) == 2 * n  # per-tensor samples of both seeds
    assert pooled["value"] == pytest.approx(np.mean(pooled["samples"]))
    assert pooled["ratio_to_baseline"] is not None and pooled["ratio_ci_low"] is not None
    assert rec[("recipe-a", "lm_dtype_is_bf16")]["value"] == 1.0  # the variant's dtype ran
    assert rec[("baseline", "lm_dtype_is_bf16")]["value"] == 0.0
    # a figure without raw samples pools the replicates' values: the spread between seeds
    params = rec[("recipe-a", "lm_parameters")]
    assert params["samples"] == [params["value"]] * 2 and params["statistic"] == "mean"
    # the A/A control built the baseline's weights again: exactly the same figures
    assert rec[("again", "mean_abs_weight")]["ratio_to_baseline"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("variant", "error", "match"),
    [
        ('lm_checkpoint = "nope.safetensors"', CheckpointError, "checkpoint not found"),
        ('lm_checkpoint = "pickle.safetensors"', CheckpointError, "not a safetensors file"),
        ('preset = "moshi-9b"', ConfigError, "unknown LM preset 'moshi-9b'"),
        ('config = "missing.json"', ConfigError, "config file not found"),
        ('lm_checkpoint = "other.safetensors"\nconfig = "tiny.json"', CheckpointError, "other.safetensors"),
        ('lm_checkpoint = "side.safetensors"', CheckpointError, "sidecar"),
    ],
)
def test_bad_variant_model_is_refused_before_any_work(tmp_path, kinds, variant, error, match) -> None:
    checkpoint(tmp_path, "base", 0)
    checkpoint(tmp_path, "other", 3)
    checkpoint(tmp_path, "side", 4)
    (tmp_path / "side.json").write_text("{not json")
    torch.save({"w": torch.zeros(2)}, tmp_path / "pickle.safetensors")
    (tmp_path / "tiny.json").write_text(PRESET.read_text())  # shapes that do not fit the micro weights
    with pytest.raises(error, match=match):
        run(tmp_path, suite_text(f'[[variants]]\nname = "v"\n{variant}\n'))
    assert not (tmp_path / "run" / "results.partial.jsonl").exists()


@pytest.mark.parametrize(
    ("variant", "match"),
    [
        ('dtype = "float64"', "dtype 'float64'"),
        ("lm_checkpoint = []", "non-empty list"),
        ('lm_checkpoint = ["a", "b"]\ncodec_checkpoint = ["c", "d", "e"]', "as many of each"),
        ('preset = "tiny"\nconfig = "x.json"', "not both"),
        ('aa = true\nflags = ["int8=rtn"]', "exact configuration"),
        ('aa = true\nlm_checkpoint = "x.safetensors"', "declares a model"),
    ],
)
def test_suite_schema_of_variant_models(variant, match) -> None:
    with pytest.raises(SuiteError, match=match):
        parse_suite(
            suite_text(f'[[variants]]\nname = "v"\n{variant}\n'), known_kinds={"weights": WEIGHT_STATS}
        )


def _results(variants: list[dict]) -> dict:
    metric = {"metric": "kv_cache_bytes_per_stream", "status": "ok", "value": 70.0, "condition": {},
              "ratio_to_baseline": 0.7, "ratio_ci_low": 0.69, "ratio_ci_high": 0.71}  # fmt: skip
    return {"variants": variants, "metrics": [{**metric, "variant": v["name"]} for v in variants]}


def _kv_claim_variants(rows) -> list[str]:
    row = next(r for r in rows if r["id"] == "1.3")
    kv = next(c for c in row["claims"] if c["metric"] == "kv_cache_bytes")
    return [m["variant"] for m in kv["measurements"]]


def test_matrix_never_attributes_an_aa_variant_nor_a_flag_on_another_model() -> None:
    base = {
        "name": "b",
        "flags": ["kv-compress=int8"],
        "is_baseline": True,
        "lm": "tiny",
        "lm_checkpoint": [None],
    }
    aa = {**base, "name": "aa", "is_baseline": False, "aa": True}
    same = {**base, "name": "kv-again", "is_baseline": False}  # the same flags but not marked: attributed?
    base_plain = {**base, "flags": []}
    other_model = {**base_plain, "name": "kv-2b", "is_baseline": False, "flags": ["kv-compress=int8"],
                   "lm": "moshi-2b"}  # fmt: skip
    on_model = {**base_plain, "name": "kv", "is_baseline": False, "flags": ["kv-compress=int8"]}
    assert _kv_claim_variants(registry.priority_matrix([_results([base, aa])])) == []
    assert _kv_claim_variants(registry.priority_matrix([_results([base, same])])) == ["kv-again"]
    rows = registry.priority_matrix([_results([base_plain, other_model, on_model])])
    assert _kv_claim_variants(rows) == ["kv"]  # int8 KV on a 2B against a 7B measures both at once


def test_attribution_by_trained_with() -> None:
    entry = registry.Enhancement(
        id="6.3", title="t", section="s", summary="", claims=(), matrix_name=None, impact="", effort="",
        priority="", phase="", metrics=(), kinds=(), device="any", flags=(), recipes=("noise-aug",),
    )  # fmt: skip
    claim = registry.Claim("wer_noisy", "40-50% better", 0.5, 0.6)
    assert registry.attributed(entry, claim, {}, {}, ["noise-aug"], [])
    assert registry.attributed(entry, claim, {}, {}, ["noise-aug", "other"], ["other"])
    assert not registry.attributed(entry, claim, {}, {}, ["noise-aug"], ["noise-aug"])  # both have it
    assert not registry.attributed(entry, claim, {}, {}, ["other"], [])
    # a checkpoint trained otherwise AND a flag: the ratio measures both, so neither
    assert not registry.attributed(entry, claim, {"int8": "rtn"}, {}, ["noise-aug"], [])


def test_flags_on_the_command_line_keep_the_aa_control() -> None:
    from vemi_eval.runner import RunOptions, select_variants

    text = suite_text(
        '[[variants]]\nname = "int8"\nflags = ["int8=rtn"]\n[[variants]]\nname = "again"\naa = true\n'
    )
    suite = parse_suite(text, known_kinds={"weights": WEIGHT_STATS})
    chosen = select_variants(suite, RunOptions(suite="x", flags=["kv-compress=int8"]), "cpu")
    assert [v.name for v, _ in chosen] == ["baseline", "kv-compress=int8", "again"]


def test_pooling_keeps_the_interleaved_baseline_twin_of_each_replicate() -> None:
    from vemi_eval.aggregate import fill_intervals
    from vemi_eval.replicates import pool_replicates

    def rec(samples, twin):
        r = MetricRecord(suite="s", variant="v", kind="latency", metric="frame_time_p50_ms", unit="ms",
                         n=len(samples), value=float(np.median(samples)), samples=samples,
                         statistic="p50")  # fmt: skip
        if twin is not None:
            r.extra["paired_baseline"] = {"variant": "b", "value": float(np.median(twin)), "samples": twin,
                                          "statistic": "p50", "order": "ABBA"}  # fmt: skip
        return r

    reps = [(0, [rec([2.0, 2.2], [1.0, 1.1])], []), (1, [rec([2.4, 2.6], [1.2, 1.3])], [])]
    pooled, _ = pool_replicates(reps)
    twin = pooled[0].extra["paired_baseline"]
    assert twin["samples"] == [1.0, 1.1, 1.2, 1.3] and twin["value"] == pytest.approx(1.15)
    fill_intervals(pooled, {}, "b", 0)
    assert pooled[0].ratio_to_baseline == pytest.approx(2.3 / 1.15)
    # a replicate measured without its twin: the pairing is dropped (the baseline's own record is used)
    pooled, _ = pool_replicates([(0, [rec([2.0], [1.0])], []), (1, [rec([2.4], None)], [])])
    assert "paired_baseline" not in pooled[0].extra

"""The enhancement registry: all eighteen entries, numeric claims, status from the model's flags, and the
priority matrix computed from a results file."""

from __future__ import annotations

import re

from reference_model.enhancements import FlagSpec
from vemi_eval.registry import (
    BY_ID,
    ENHANCEMENTS,
    METRICS,
    attributed,
    priority_matrix,
    status,
    verdict,
)
from vemi_eval.registry_listing import registry_table

DOC_IDS = [
    "1.1",
    "1.2",
    "1.3",
    "2.1",
    "2.2",
    "2.3",
    "3.1",
    "3.2",
    "3.3",
    "4.1",
    "4.2",
    "4.3",
    "5.1",
    "5.2",
    "5.3",
    "6.1",
    "6.2",
    "6.3",
]
TRAINING_ONLY = {"1.1", "3.1", "3.3", "4.1", "4.2", "4.3", "6.1", "6.2", "6.3"}


def test_eighteen_entries_with_numeric_claims() -> None:
    assert [e.id for e in ENHANCEMENTS] == DOC_IDS
    for e in ENHANCEMENTS:
        assert e.claims, e.id
        for c in e.claims:
            assert c.metric in METRICS, (e.id, c.metric)
            assert c.lo is not None and c.hi is not None and c.lo <= c.hi, (e.id, c.text)
            assert re.search(r"\d", c.text), (e.id, c.text)  # the document's number is in the text
        assert all(m in METRICS for m in e.metrics)
        assert bool(e.flags) != (e.id in TRAINING_ONLY), e.id
        if e.id in TRAINING_ONLY:  # why not, until a training recipe option implements it
            assert e.not_implementable or e.recipes, e.id
    # spot-check transcriptions against the document
    flash = BY_ID["2.2"]
    assert flash.priority == "Critical" and flash.effort == "Low" and flash.impact == "High"
    assert {(c.metric, c.lo, c.hi) for c in flash.claims} >= {
        ("attention_time", 0.30, 0.50),
        ("attention_memory", 0.60, 0.60),
    }
    assert BY_ID["5.2"].claims[0].lo == 3.0 and BY_ID["5.2"].claims[0].hi == 5.0
    assert BY_ID["2.1"].claims[1].lo == 0.25  # "4x KV-cache reduction"
    assert BY_ID["1.3"].priority == "not in matrix" and BY_ID["2.3"].priority == "Low"


def test_status_follows_the_registered_flags() -> None:
    spec = FlagSpec("gqa", "gqa", "model", "x")
    assert status(BY_ID["2.1"], {"gqa": spec})["status"] == "implemented"
    s = status(BY_ID["2.1"], {})
    assert s["status"] == "not implemented" and "gqa" in s["reason"]
    unbuilt = [i for i in sorted(TRAINING_ONLY) if not BY_ID[i].recipes]  # no recipe option yet
    for i in unbuilt[:1]:
        s = status(BY_ID[i], {"gqa": spec})
        assert s["status"] == "not implemented" and "training-only" in s["reason"]
    rows = registry_table({"gqa": spec}, with_suites=False)
    assert (
        len(rows) == 18 and rows[3]["status"] == "implemented" and rows[3]["claims"][1]["threshold"] == 0.25
    )


def test_verdicts_and_priority_matrix() -> None:
    claim = BY_ID["2.1"].claims[0]  # 25-35% faster: time ratio <= 0.75 meets
    assert verdict(claim, 0.6, 0.55, 0.65) == "meets"
    assert verdict(claim, 0.95, 0.9, 1.0) == "falls short"
    assert verdict(claim, 0.75, 0.6, 0.9) == "inconclusive"
    assert verdict(claim, 0.7, None, None) == "meets (no CI)"
    res = {
        "variants": [
            {"name": "base", "flags": [], "is_baseline": True},
            {"name": "gqa4", "flags": ["gqa=4"], "is_baseline": False},
        ],
        "metrics": [
            {
                "suite": "s",
                "variant": "gqa4",
                "metric": "frame_time_p50_ms",
                "status": "ok",
                "value": 9.0,
                "ratio_to_baseline": 0.9,
                "ratio_ci_low": 0.85,
                "ratio_ci_high": 0.95,
                "condition": {"stage": "lm"},
            },
            {  # the same metric for another stage must not count as the LM step
                "suite": "s",
                "variant": "gqa4",
                "metric": "frame_time_p50_ms",
                "status": "ok",
                "value": 1.0,
                "ratio_to_baseline": 0.1,
                "ratio_ci_low": 0.05,
                "ratio_ci_high": 0.15,
                "condition": {"stage": "encode"},
            },
            {
                "suite": "s",
                "variant": "gqa4",
                "metric": "kv_cache_bytes_per_stream",
                "status": "ok",
                "value": 100,
                "ratio_to_baseline": 0.25,
                "ratio_ci_low": None,
                "ratio_ci_high": None,
                "condition": {},
            },
        ],
    }
    rows = {r["id"]: r for r in priority_matrix([res], {"gqa": FlagSpec("gqa", "gqa", "model", "x")})}
    gqa = rows["2.1"]
    assert gqa["status"] == "implemented"
    assert gqa["claims"][0]["verdict"] == "falls short"  # 0.9 > 0.75
    assert len(gqa["claims"][0]["measurements"]) == 1
    assert gqa["claims"][1]["verdict"] == "meets"  # 0.25 <= 0.25 (no CI)
    assert rows["2.2"]["claims"][0]["verdict"] == "not measured"


def _attention_run(baseline_flags: list[str], variants: dict[str, list[str]]) -> dict:
    """A results file with one attention_time record (ratio 0.4, meets the claim) per non-baseline variant."""
    names = ["base", *variants]
    flags = {"base": baseline_flags, **variants}
    return {
        "variants": [{"name": n, "flags": flags[n], "is_baseline": n == "base"} for n in names],
        "metrics": [
            {
                "suite": "attention",
                "variant": n,
                "metric": "attention_time",
                "status": "ok",
                "value": 1.0,
                "ratio_to_baseline": 0.4,
                "ratio_ci_low": 0.35,
                "ratio_ci_high": 0.45,
                "condition": {"context": 3000},
            }
            for n in variants
        ],
    }


def test_flash_attention_counts_only_fused_backends_against_another_backend() -> None:
    flash, attn = BY_ID["2.2"], {"attn": FlagSpec("attn", "attention", "model", "x")}
    claim = flash.claims[0]
    assert attributed(flash, claim, {"attn": "flash"}, {"attn": "eager"})
    assert attributed(flash, claim, {"attn": "sdpa"}, {"attn": "eager"})
    assert attributed(flash, claim, {"attn": "flash"}, {})  # the model's default backend is sdpa
    assert not attributed(flash, claim, {"attn": "eager"}, {})  # standard attention is the baseline
    assert not attributed(flash, claim, {"attn": "sdpa"}, {})  # same backend as the default baseline
    assert not attributed(flash, claim, {"attn": "sdpa"}, {"attn": "sdpa"})
    assert not attributed(flash, claim, {"int8": None}, {"attn": "eager"})
    # an entry without flag_values keeps the old rule: using one of its flags is enough
    assert attributed(BY_ID["2.1"], BY_ID["2.1"].claims[0], {"gqa": "4"}, {})

    def measured(res: dict) -> list[str]:
        rows = {r["id"]: r for r in priority_matrix([res], attn)}
        return [m["variant"] for m in rows["2.2"]["claims"][0]["measurements"]]

    # the latency (and matrix) suite's shape: a no-flag baseline (sdpa) and attn=eager beside it: the
    # baseline is the enhancement measured against eager, read inverted (baseline / eager); sdpa against
    # the sdpa baseline measures nothing of 2.2
    inverted = _attention_run([], {"attn-eager": ["attn=eager"], "attn-sdpa": ["attn=sdpa"]})
    assert measured(inverted) == ["attn-eager"]
    run = _attention_run(["attn=eager"], {"sdpa": ["attn=sdpa"], "flash": ["attn=flash"]})
    assert measured(run) == ["sdpa", "flash"]
    rows = {r["id"]: r for r in priority_matrix([run], attn)}
    assert rows["2.2"]["claims"][0]["verdict"] == "meets"  # 0.35-0.45 <= 0.50
    assert rows["2.2"]["claims"][2]["verdict"] == "not measured"  # no attention_peak_memory record


def test_every_claim_of_an_implemented_enhancement_has_records_that_stand_for_it() -> None:
    """A claim metric reaches the registry only through a measurement kind's ``claims=`` declaration: a
    claim that no kind declares could never be measured (it would read "not measured" for ever)."""
    from reference_model.enhancements import available_flags
    from vemi_eval.measurements import claim_rules

    rules = claim_rules()
    flags = available_flags()
    for e in ENHANCEMENTS:
        if status(e, flags)["status"] != "implemented":
            continue
        for c in e.claims:
            assert rules.get(c.metric), f"{e.id}: claim {c.text!r} names {c.metric!r}, which no kind declares"
            kinds = {kind for _p, _w, kind in rules[c.metric]}
            assert kinds & set(e.kinds), (e.id, c.metric, kinds, e.kinds)  # one of the kinds it lists


def test_the_claims_file_is_checked(tmp_path) -> None:
    import pytest

    from vemi_eval.errors import SuiteError
    from vemi_eval.registry import CLAIMS_FILE, load_registry

    text = CLAIMS_FILE.read_text(encoding="utf-8")
    entries, directions = load_registry(CLAIMS_FILE)
    assert len(entries) == 18 and directions["lm_step_time"] == "lower"
    bad = tmp_path / "claims.toml"
    bad.write_text(text.replace('metric = "lm_step_time"', 'metric = "lm_step_tme"', 1), encoding="utf-8")
    with pytest.raises(SuiteError, match="lm_step_tme"):
        load_registry(bad)
    bad.write_text(text.replace('priority = "High"', 'priorty = "High"', 1), encoding="utf-8")
    with pytest.raises(SuiteError, match="priorty"):
        load_registry(bad)

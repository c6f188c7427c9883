"""The report leads with the priority matrix (the document's order, claim, measured ratio and interval,
verdict, one claimed-range figure per measured enhancement), publishes the A/A noise floor, splits the
forest plot per variant; the registry reads attn=eager against an sdpa baseline as the claim inverted;
--quick may name its own variants. Results written by hand: no model runs here."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tests.test_report import TagChecker, record
from vemi_eval import registry
from vemi_eval.report import build_report
from vemi_eval.report.plots import ratio_ticks
from vemi_eval.results import RESULTS_FILE, SCHEMA, SCHEMA_VERSION
from vemi_eval.suites import parse_suite


def _ratio(m: dict, r: float, lo: float, hi: float, better: bool = False) -> dict:
    return {**m, "ratio_to_baseline": r, "ratio_ci_low": lo, "ratio_ci_high": hi, "higher_is_better": better}


def write_matrix_run(path: Path, *, aa_ratio: tuple[float, float, float] = (1.01, 0.97, 1.05),
                     with_aa: bool = True) -> Path:  # fmt: skip
    path.mkdir(parents=True)
    lm = {"condition": {"stage": "lm"}, "suite": "matrix"}
    att = {"condition": {"context": 250}, "suite": "matrix"}
    metrics = [
        record("baseline", "frame_time_p50_ms", 40.0, **lm),
        _ratio(record("int4", "frame_time_p50_ms", 18.0, **lm), 0.45, 0.40, 0.50),
        record("baseline", "attention_time", 1.0, **att),
        _ratio(record("attn-eager", "attention_time", 2.5, **att), 2.5, 2.2, 2.8),
        record(
            "cuda-graphs", "frame_time_p50_ms", None, status="skipped", reason="needs a CUDA device", **lm
        ),
    ]
    variants = [
        {"name": "baseline", "flags": [], "is_baseline": True, "lm": "tiny", "lm_checkpoint": [None]},
        {"name": "int4", "flags": ["int4=rtn"], "is_baseline": False, "lm": "tiny", "lm_checkpoint": [None]},
        {"name": "attn-eager", "flags": ["attn=eager"], "is_baseline": False, "lm": "tiny",
         "lm_checkpoint": [None]},
        {"name": "cuda-graphs", "flags": ["cuda-graphs"], "is_baseline": False, "lm": "tiny",
         "lm_checkpoint": [None]},
    ]  # fmt: skip
    if with_aa:
        variants.append({**variants[0], "name": "baseline-again", "is_baseline": False, "aa": True})
        metrics.append(_ratio(record("baseline-again", "frame_time_p50_ms", 40.4, **lm), *aa_ratio))
    doc = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "suite": {"name": "matrix", "path": "suites/matrix.toml", "sha256": "ab" * 32, "content": ""},
        "model": {"lm": "tiny", "codec": "tiny", "device": "cpu", "dtype": "float32"},
        "variants": variants, "seed": 0, "quick": True, "threads": 1, "status": "VALID",
        "invalid_reasons": [], "errors": [], "missing": [], "environment": {}, "evaluators": {}, "data": {},
        "metrics": metrics,
    }  # fmt: skip
    (path / RESULTS_FILE).write_text(json.dumps(doc))
    return path


def _lead(text: str) -> str:
    return text[text.index('id="lead"') : text.index('id="runs"')]


def test_report_leads_with_the_matrix_in_the_documents_order(tmp_path: Path) -> None:
    text = build_report([write_matrix_run(tmp_path / "m")], tmp_path / "r.html").read_text(encoding="utf-8")
    checker = TagChecker()
    checker.feed(text)
    assert not checker.errors and not checker.stack
    first_h2 = re.search(r"<h2[^>]*>(.*?)</h2>", text).group(1)
    assert first_h2 == "What was measured"
    lead = _lead(text)
    # the rows measured come first; the enhancements nothing measured collapse into one line with why
    claims = lead.index("The priority matrix: the claims these runs measured")
    collapsed = re.search(r"<b>(\d+) of 18 enhancements not measured by this suite:</b>", lead)
    assert collapsed and claims < collapsed.start() and int(collapsed.group(1)) == 18 - 2
    table = lead[claims : lead.index("</table>", claims)]
    assert table.count("<tr>") - 1 == 6  # 2.2's three claims and 5.1's three (and the header row)
    # the matrix is rendered once: the measurement appears on its two claims' rows and nowhere else
    assert "Every claim and measurement" not in text and text.count("attn-eager: attention_time") == 2
    # the document's priority-matrix order: Flash Attention, 4-bit Quantization, Speculative Decoding...
    at = [lead.index(f"{i} {registry.BY_ID[i].title}") for i in ("2.2", "5.1", "1.2", "2.1", "1.1")]
    assert at == sorted(at)
    # 2.2: eager against the sdpa baseline, read as baseline / eager: 1/2.5 = 0.4 [1/2.8, 1/2.2]
    assert "attn-eager: attention_time context=250 (baseline / variant): <b>0.4</b> [0.357, 0.455]" in lead
    # 5.1 int4: 0.45 [0.40, 0.50] against "2x faster" (ratio <= 0.5): meets; with the A/A interval beside
    assert "int4: frame_time_p50_ms stage=lm: <b>0.45</b> [0.4, 0.5]" in lead and "(A/A [0.97, 1.05])" in lead
    # each row names its context, and a timing its minimum detectable effect (from the A/A interval)
    assert "cpu; 1 thread; float32; tiny; unknown" in lead and "MDE (80% power) 6%" in lead
    # a row that cannot be measured says why
    assert "not measured: cuda-graphs: skipped: needs a CUDA device" in lead
    # one claimed-range figure per measured enhancement (2.2 and 5.1), inline PNG
    figures = re.findall(r'<img alt="([^"]*claimed range[^"]*)" src="data:image/png;base64,', lead)
    assert [f.split(":")[0] for f in figures] == ["2.2", "5.1"]


def test_matrix_never_attributes_the_aa_variant_and_reads_eager_inverted(tmp_path: Path) -> None:
    run = write_matrix_run(tmp_path / "m")
    doc = json.loads((run / RESULTS_FILE).read_text())
    rows = {r["id"]: r for r in registry.priority_matrix([doc])}
    everything = [m for r in rows.values() for c in r["claims"] for m in c["measurements"]]
    assert all(m["variant"] != "baseline-again" for m in everything)
    fast = rows["2.2"]["claims"][0]["measurements"][0]
    assert fast["inverted"] and fast["measured"] == pytest.approx(0.4)
    # sdpa against eager stands in for flash-attn: a proxy, never "meets" (tests/test_matrix_verdicts.py)
    assert fast["verdict"] == "proxy: sdpa against eager attention (flash-attn did not run)"
    assert fast["ci_low"] == pytest.approx(1 / 2.8) and fast["ci_high"] == pytest.approx(1 / 2.2)


def test_runs_reference_rules() -> None:
    e = registry.BY_ID["2.2"]
    c = e.claims[0]
    assert registry.runs_reference(e, c, {"attn": "eager"}, {})  # sdpa (the default) is the baseline
    assert registry.runs_reference(e, c, {"attn": "eager"}, {"attn": "flash"})
    assert not registry.runs_reference(e, c, {"attn": "sdpa"}, {})  # the same attention: nothing measured
    assert not registry.runs_reference(e, c, {"attn": "eager"}, {"attn": "eager"})
    assert not registry.runs_reference(e, c, {"attn": "eager", "int4": "rtn"}, {})  # two changes at once
    assert not registry.runs_reference(registry.BY_ID["1.3"], c, {"kv-compress": "int8"}, {})  # no rule
    assert registry.attributed(e, c, {"attn": "sdpa"}, {"attn": "eager"})  # the attention suite's way


def test_noise_floor_is_published_and_a_failing_one_flagged(tmp_path: Path) -> None:
    ok = build_report([write_matrix_run(tmp_path / "ok")], tmp_path / "ok.html").read_text(encoding="utf-8")
    floor = ok[ok.index('id="noise"') : ok.index('id="summary"')]
    assert "Every interval contains 1." in floor and "frame_time_p50_ms" in floor and "[0.97, 1.05]" in floor
    bad_run = write_matrix_run(tmp_path / "bad", aa_ratio=(1.2, 1.1, 1.3))
    bad = build_report([bad_run], tmp_path / "bad.html").read_text(encoding="utf-8")
    floor = bad[bad.index('id="noise"') : bad.index('id="summary"')]
    assert "1 of 1 intervals exclude 1" in floor and ">NO<" in floor
    # the matrix says so on the claim whose metric drifted (5.1 int4, frame_time_p50_ms stage=lm)
    assert "A/A excludes 1: drift larger than the interval" in _lead(bad)
    assert "A/A excludes 1" not in _lead(ok)
    none = build_report([write_matrix_run(tmp_path / "none", with_aa=False)], tmp_path / "n.html")
    assert "No A/A variant in this run" in none.read_text(encoding="utf-8")


def test_forest_is_one_figure_per_variant(tmp_path: Path) -> None:
    text = build_report([write_matrix_run(tmp_path / "m")], tmp_path / "r.html").read_text(encoding="utf-8")
    captions = re.findall(r"<figcaption>m: ([^<]*) against the baseline", text)
    assert sorted(captions) == ["baseline-again", "int4"]  # attn-eager's ratio has a numeric condition


@pytest.mark.parametrize(("lo", "hi"), [(0.01, 100.0), (0.2, 5.0), (0.8, 1.25), (0.3, 1.1)])
def test_ratio_ticks_never_crowd(lo: float, hi: float) -> None:
    ticks = ratio_ticks(lo, hi)
    span = math.log10(hi / lo)
    assert 1.0 in ticks and len(ticks) >= 3
    gaps = [math.log10(b / a) / span for a, b in zip(ticks, ticks[1:], strict=False)]
    assert min(gaps) >= 0.085


def test_quick_may_name_its_own_variants() -> None:
    text = """
    [suite]
    name = "q"
    description = "d"
    [[variants]]
    name = "baseline"
    [[variants]]
    name = "slow"
    flags = ["compile"]
    [latency]
    [latency.quick]
    variants = ["baseline"]
    frames = 40
    """
    from vemi_eval.measurements import load_all

    suite = parse_suite(text, known_kinds=load_all())
    assert [v.name for v in suite.variants_for("latency")] == ["baseline", "slow"]
    assert [v.name for v in suite.variants_for("latency", quick=True)] == ["baseline"]
    assert "variants" not in suite.params_for("latency", quick=True)
    from vemi_eval.errors import SuiteError

    with pytest.raises(SuiteError, match=r"\[latency.quick\] names variant 'nope'"):
        parse_suite(text.replace('variants = ["baseline"]', 'variants = ["nope"]'), known_kinds=load_all())


def test_accuracy_per_voice_is_tabled_for_the_clean_channel_only(tmp_path: Path) -> None:
    run = tmp_path / "d"
    run.mkdir()
    clean, noisy = {"snr_db": "clean", "source": "text"}, {"snr_db": 10, "source": "text"}
    by_clean = {"Andy": {"correct": 3, "turns": 8}, "klatt3": {"correct": 4, "turns": 4}}
    by_noisy = {"Andy": {"correct": 1, "turns": 8}, "zz-only-noisy": {"correct": 0, "turns": 4}}
    metrics = [
        record("baseline", "answer_accuracy", 0.58, unit="fraction", condition=clean, suite="dialogue",
               extra={"by_voice": by_clean}),
        record("baseline", "answer_accuracy", 0.1, unit="fraction", condition=noisy, suite="dialogue",
               extra={"by_voice": by_noisy}),
    ]  # fmt: skip
    doc = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "suite": {"name": "dialogue", "path": "suites/dialogue.toml", "sha256": "ab" * 32, "content": ""},
        "model": {"lm": "tiny", "codec": "tiny", "device": "cpu", "dtype": "float32"},
        "variants": [{"name": "baseline", "flags": [], "is_baseline": True, "lm": "tiny",
                      "lm_checkpoint": [None]}],
        "seed": 0, "quick": True, "threads": 1, "status": "VALID", "invalid_reasons": [], "errors": [],
        "missing": [], "environment": {}, "evaluators": {}, "data": {}, "metrics": metrics,
    }  # fmt: skip
    (run / RESULTS_FILE).write_text(json.dumps(doc))
    text = build_report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    section = text[text.index("Answer accuracy per held-out user voice") :]
    section = section[: section.index("</table>")]
    assert re.search(r"<td>Andy</td><td class=\"num worse\">0.38 \(3/8\)</td>", section)
    assert re.search(r"<td>klatt3</td><td class=\"num\">1.00 \(4/4\)</td>", section)
    assert "zz-only-noisy" not in section  # noisy rows are not tabled
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.errors and not checker.stack


def test_an_enhancement_is_named_by_its_flags_and_its_recipes() -> None:
    from vemi_eval.report.matrix_view import implemented_by

    by_flag = registry.status(registry.BY_ID["2.3"], flags={"mod": True})
    assert implemented_by(by_flag) == ["mod"]
    by_recipe = registry.status(registry.BY_ID["4.2"], flags={})  # dpo: a training recipe, no flag
    assert by_recipe["status"] == "implemented" and implemented_by(by_recipe) == ["dpo"]
    both = {**by_flag, "recipes_registered": ["dpo"]}
    assert implemented_by(both) == ["mod", "dpo"]  # either implements it: neither hides the other

"""A real run of the tiny preset through the runner (latency + memory, baseline + int8): every record
lands in results.json with ratios to the baseline, and the run is VALID. Behaviour only, no speed."""

from __future__ import annotations

import textwrap

import pytest

from vemi_eval.recorded_run import run_suite
from vemi_eval.runner import RunOptions

TINY = textwrap.dedent(
    """\
    [suite]
    name = "tiny-smoke"
    description = "tiny preset through the real model"
    threads = 1

    [model]
    lm = "tiny"
    codec = "tiny"

    [[variants]]
    name = "baseline"

    [[variants]]
    name = "int8"
    flags = ["int8=rtn"]

    [latency]
    frames = 14
    warmup_frames = 2
    min_frames = 10
    min_duration_s = 0.1
    position_buckets = 1
    input = "synthetic"

    [memory]
    contexts = [125]
    frames = 3
    """
)


@pytest.mark.slow
def test_tiny_preset_run_is_valid_with_ratios(tmp_path) -> None:
    import torch

    threads = torch.get_num_threads()
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    try:
        out = run_suite(
            RunOptions(
                suite=str(suite),
                out=str(tmp_path / "run"),
                report=False,
                progress=False,
                history_path=tmp_path / "h.sqlite",
            ),
            echo=lambda m: None,
        )
    finally:
        torch.set_num_threads(threads)
    doc = out.results
    assert out.status == "VALID", (doc["invalid_reasons"], doc["errors"])
    by = {(m["variant"], m["metric"], tuple(sorted(m["condition"].items()))): m for m in doc["metrics"]}
    lm_p50 = by[("int8", "frame_time_p50_ms", (("stage", "lm"),))]
    assert lm_p50["ratio_to_baseline"] is not None and lm_p50["ratio_ci_low"] is not None
    weights = by[("int8", "weight_bytes", (("component", "lm"),))]
    assert weights["ratio_to_baseline"] < 0.9  # int8 linears (the embeddings stay fp32 in the tiny preset)
    assert (tmp_path / "run" / "samples.csv").stat().st_size > 0

"""`vemi-eval sweep` on Ray: one task per variant (baseline beside it), failures reported, --resume.

The Ray tests share one local Ray instance (module fixture: Ray starts slowly on a loaded machine). The
runs use a fake measurement kind and a fake build (registered in each worker through the sweep's
``setup`` hook), so a run takes a moment; what fails where is chosen by marker files in the suite's data
directory, since the workers are other processes.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vemi_eval import measurements
from vemi_eval.cli.sweep import sweep_command
from vemi_eval.errors import EXIT_INCOMPLETE, EXIT_OK, OptionsError, SuiteError
from vemi_eval.measurements import MeasurementSpec
from vemi_eval.records import MetricRecord
from vemi_eval.suites import parse_suite
from vemi_eval.sweep import (
    FAILED,
    INCOMPLETE,
    SWEEP_FILE,
    VALID,
    SweepOptions,
    build_plan,
    expand_axes,
    import_ray,
    parse_grid,
    plan_sweep,
    read_sweep_file,
    run_sweep,
    slugify,
)

FAKE_KIND = "sweep_fake"

SUITE = textwrap.dedent(
    """\
    [suite]
    name = "sweepfake"
    description = "fake suite for the sweep tests"
    threads = 1
    seed = 0

    [[variants]]
    name = "base"

    [[variants]]
    name = "own"
    flags = ["attn=sdpa"]

    [data]
    dir = "."

    [sweep_fake]
    n = 30
    """
)


# --- fakes (module level: the workers import them by reference) -----------------------------------------
def fake_build(spec) -> SimpleNamespace:
    return SimpleNamespace(flags=list(spec.flags), reset=lambda mask=None: None)


def sweep_fake(ctx) -> list[MetricRecord]:
    """Step times 1.5x slower under int4; marker files make a variant fail (raise) or its worker die."""
    model = ctx.variant.build(batch_size=1)
    flags = slugify(",".join(model.flags)) if model.flags else "base"
    data = Path(ctx.data["dir"])
    with open(data / "calls.log", "a", encoding="utf-8") as f:
        f.write(ctx.variant.name + "\n")
    if (data / f"crash-{flags}").exists():
        os._exit(3)  # the worker process dies (a segfault, an OOM kill)
    if (data / f"fail-{flags}").exists():
        raise RuntimeError(f"fake failure of {flags}")
    rng = np.random.default_rng(ctx.seed)
    t = rng.lognormal(np.log(10.0), 0.2, size=int(ctx.params["n"])) * (1.5 if "int4" in flags else 1.0)
    median = float(np.median(t))
    return [
        MetricRecord(
            ctx.suite,
            ctx.variant.name,
            "step_ms",
            median,
            "ms",
            len(t),
            samples=t.tolist(),
            statistic="median",
        )
    ]


SWEEP_FAKE = MeasurementSpec(FAKE_KIND, sweep_fake, params={"n": 30})


def register_fakes() -> None:
    measurements.load_all()
    measurements.MEASUREMENTS.setdefault(FAKE_KIND, SWEEP_FAKE)


@pytest.fixture
def fake_kind():
    register_fakes()
    yield
    measurements.MEASUREMENTS.pop(FAKE_KIND, None)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module's Ray tests."""
    ray = import_ray()  # Ray is a test dependency ([test] extra): missing, the test fails
    try:
        ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    except Exception as exc:  # pragma: no cover - a machine where Ray cannot start
        pytest.skip(f"Ray cannot start here: {exc}")
    yield ray
    ray.shutdown()


def _suite_file(tmp_path: Path) -> Path:
    p = tmp_path / "sweepfake.toml"
    p.write_text(SUITE)
    return p


def _sweep(tmp_path: Path, grid: str, **kw) -> object:
    plan = build_plan(str(_suite_file(tmp_path)), grid=[grid])
    opts = SweepOptions(
        out=str(tmp_path / "sweep"),
        retries=0,
        num_cpus=0.5,  # logical CPUs: the three runs go at once (a fresh worker per run starts slowly)
        report=False,
        history=False,
        setup=register_fakes,
        build_fn=fake_build,
    )
    for k, v in kw.items():
        setattr(opts, k, v)
    return run_sweep(plan, opts, echo=lambda m: None)


# --- the sweep on Ray ---------------------------------------------------------------------------------------
@pytest.mark.usefixtures("fake_kind")
def test_sweep_runs_each_variant_beside_the_baseline_reports_failures_and_resumes(
    tmp_path, ray_local
) -> None:
    (tmp_path / "fail-int4-rtn").touch()  # int4's measurement raises: its run is INCOMPLETE
    (tmp_path / "crash-kv-compress-int8").touch()  # kv-compress's worker dies: the run FAILED
    first = _sweep(tmp_path, "int8=rtn;int4=rtn;kv-compress=int8")
    assert first.exit_code == EXIT_INCOMPLETE
    summary = json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text())
    by = {e["slug"]: e for e in summary["points"]}
    assert set(by) == {"int8-rtn", "int4-rtn", "kv-compress-int8"}
    assert by["int8-rtn"]["status"] == VALID and by["int8-rtn"]["error"] is None
    assert by["int4-rtn"]["status"] == INCOMPLETE and "fake failure of int4-rtn" in by["int4-rtn"]["error"]
    assert by["kv-compress-int8"]["status"] == FAILED
    assert (
        "died" in by["kv-compress-int8"]["error"].lower()
        or "crash" in by["kv-compress-int8"]["error"].lower()
    )
    assert all("\n" not in (e["error"] or "") for e in summary["points"])
    assert by["int8-rtn"]["host"] and by["int8-rtn"]["node_id"]
    assert summary["counts"] == {VALID: 1, INCOMPLETE: 1, FAILED: 1}

    # each run directory is a complete run: the baseline and ONE variant, side by side
    run = json.loads((tmp_path / "sweep" / "int8-rtn" / "results.json").read_text())
    assert [v["name"] for v in run["variants"]] == ["base", "int8=rtn"] and run["status"] == VALID
    assert {m["variant"] for m in run["metrics"]} == {"base", "int8=rtn"}
    assert by["int8-rtn"]["metrics"][0]["ratio_to_baseline"] == pytest.approx(1.0)
    assert (tmp_path / "sweep" / "int4-rtn" / "results.partial.jsonl").is_file()

    # --resume (the sweep narrowed to int8 and int4): int8 is kept, int4 redoes only its variant's
    # measurement (the runner's own resume); one run at a time keeps this test short on a loaded machine
    (tmp_path / "fail-int4-rtn").unlink()
    calls_before = (tmp_path / "calls.log").read_text().splitlines()
    second = _sweep(tmp_path, "int8=rtn;int4=rtn", resume=True)
    new_calls = (tmp_path / "calls.log").read_text().splitlines()[len(calls_before) :]
    assert new_calls == ["int4=rtn"]
    assert second.exit_code == EXIT_OK
    summary = json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text())
    by = {e["slug"]: e for e in summary["points"]}
    assert set(by) == {"int8-rtn", "int4-rtn"} and {e["status"] for e in by.values()} == {VALID}
    assert by["int8-rtn"]["resumed"] and not by["int4-rtn"]["resumed"]
    int4 = next(m for m in by["int4-rtn"]["metrics"] if m["metric"] == "step_ms")
    assert int4["ratio_to_baseline"] == pytest.approx(1.5)
    run = json.loads((tmp_path / "sweep" / "int4-rtn" / "results.json").read_text())
    assert run["status"] == VALID and {m["variant"] for m in run["metrics"]} == {"base", "int4=rtn"}

    # a resumed sweep with other settings would mix runs: refused
    with pytest.raises(OptionsError, match="different seed"):
        plan = build_plan(str(_suite_file(tmp_path)), grid=["int8=rtn"], seeds=[3])
        run_sweep(plan, SweepOptions(out=str(tmp_path / "sweep"), resume=True, setup=register_fakes))


# --- plans, files and errors (no Ray) -----------------------------------------------------------------------
def test_grid_parsing_and_axes() -> None:
    assert parse_grid("int8=rtn;int8=gptq;int4=awq,attn=sdpa") == [
        ("int8=rtn",),
        ("int8=gptq",),
        ("int4=awq", "attn=sdpa"),
    ]
    with pytest.raises(OptionsError, match="entry #2 has no flag"):
        parse_grid("int8;;int4")
    assert expand_axes({"w": ["", "int8"], "kv": ["", "kv-compress"]}) == [
        ("kv-compress",),
        ("int8",),
        ("int8", "kv-compress"),
    ]
    assert slugify("int8=rtn,attn=sdpa") == "int8-rtn_attn-sdpa"


@pytest.mark.usefixtures("fake_kind")
def test_plan_conflicts_defaults_and_seeds(tmp_path) -> None:
    from reference_model.enhancements import FlagError

    suite = parse_suite(SUITE, path=tmp_path / "s.toml", known_kinds=measurements.load_all())
    # no flag set: the suite's own non-baseline variants
    plan = plan_sweep(suite, "s", seeds=[0, 1])
    assert [(p.slug, p.suite_variant, p.seed) for p in plan.points] == [
        ("own-seed0", "own", 0),
        ("own-seed1", "own", 1),
    ]
    # a conflict the user wrote is an error; in the [grid] product it is left out with its reason
    with pytest.raises(FlagError, match="cannot combine"):
        plan_sweep(suite, "s", flag_sets=[("x", ("int8", "int4"))])
    with pytest.raises(FlagError, match="unknown flag"):
        plan_sweep(suite, "s", flag_sets=[("x", ("warp-drive",))])
    plan = plan_sweep(suite, "s", axes={"a": ["int8", "int4"], "b": ["", "int8"]})
    assert [p.variant for p in plan.points] == ["int8", "int4"]
    assert [s["variant"] for s in plan.skipped] == ["int8,int8", "int4,int8"]
    # a GPU-only flag: left out on cpu, kept on cuda (the worker's GPU is Ray's to give)
    plan = plan_sweep(
        suite, "s", flag_sets=[("g", ("cuda-graphs",)), ("i", ("int8",))], devices=["cpu", "cuda"]
    )
    assert [p.slug for p in plan.points] == ["g-cuda", "i-cpu", "i-cuda"]
    assert plan.skipped == [
        {"variant": "g on cpu", "reason": "flag 'cuda-graphs' needs a CUDA device (got device='cpu')"}
    ]
    with pytest.raises(OptionsError, match="no variant this device can run"):
        plan_sweep(suite, "s", flag_sets=[("g", ("cuda-graphs",))])
    with pytest.raises(OptionsError, match="same flags"):
        plan_sweep(suite, "s", flag_sets=[("a", ("int8",)), ("b", ("int8",))])


def test_sweep_file(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    f = tmp_path / "sw.toml"
    f.write_text(
        textwrap.dedent(
            """\
            [sweep]
            suite = "sweepfake.toml"
            seeds = [0, 1]
            devices = ["cpu"]
            data = "d"
            quick = true

            [[variants]]
            name = "int8-gptq"
            flags = ["int8=gptq"]

            [grid]
            kv = ["", "kv-compress"]
            w = ["", "int4"]
            """
        )
    )
    spec = read_sweep_file(f)
    assert spec["suite"] == str(tmp_path / "sweepfake.toml") and spec["data"] == str(tmp_path / "d")
    assert spec["variants"] == [("int8-gptq", ("int8=gptq",))]
    assert spec["axes"] == {"kv": ["", "kv-compress"], "w": ["", "int4"]}
    bad = {
        "seeds = [0, 1]": ("seeds = [0.5]", "seeds must be integers"),
        'devices = ["cpu"]': ('devices = ["cuda:1"]', "write 'cuda'"),
        "quick = true": ("quick = true\nthreadz = 1", "unknown key 'threadz'"),
    }
    for old, (new, msg) in bad.items():
        f.write_text(f.read_text().replace(old, new))
        with pytest.raises((SuiteError, OptionsError), match=msg):
            read_sweep_file(f)
        f.write_text(f.read_text().replace(new, old))


def test_ray_missing_is_one_line_exit_2(tmp_path, monkeypatch, capsys) -> None:
    from vemi_eval import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(OptionsError, match=r"needs Ray: pip install 'vemi-eval\[dist\]'"):
        import_ray()
    monkeypatch.setitem(cli.cli.commands, "sweep", sweep_command)
    monkeypatch.setattr(measurements, "load_all", lambda: {FAKE_KIND: SWEEP_FAKE})
    with pytest.raises(SystemExit) as exc:
        cli.main(["sweep", str(_suite_file(tmp_path)), "--grid", "int8", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.usefixtures("fake_kind")
def test_an_earlier_sweep_is_never_replaced_without_overwrite(tmp_path) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    (out / SWEEP_FILE).write_text('{"earlier": true}\n', encoding="utf-8")
    with pytest.raises(OptionsError, match="--overwrite"):
        _sweep(tmp_path, "int8=rtn")  # refused before Ray starts or any run is planned onto disk
    assert (out / SWEEP_FILE).read_text(encoding="utf-8") == '{"earlier": true}\n'
    assert sorted(p.name for p in out.iterdir()) == [SWEEP_FILE]

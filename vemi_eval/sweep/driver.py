"""The sweep driver: every point as a Ray task, OUT/<slug>/ per run, sweep.json, the comparison report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import results as rs
from .. import rundir
from ..environment import git_state, now_iso
from ..errors import (
    OptionsError,
    one_line,
)
from ..storage import write_atomic, writes
from .cluster import check_feasible, cluster_facts, connect, import_ray, ray_error_line
from .plan import SweepPlan, SweepPoint, point_fingerprint
from .summary import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    PENDING,
    SWEEP_FILE,
    counts,
    from_run,
    new_summary,
    progress_line,
    write_summary,
)
from .worker import ERROR_FILE, SHIPPED_FILES, run_point

KEPT = "the runs finished before are kept: free space, then `vemi-eval sweep ... --resume`"


@dataclass
class SweepOptions:
    out: str | None = None  # default runs/sweep-SUITE-TIME
    resume: bool = False
    overwrite: bool = False  # replace an earlier sweep in ``out`` (without it, one is never touched)
    address: str | None = None  # a Ray cluster to join; None: a local instance (or the one already up)
    local_cpus: int | None = None  # CPUs of the local instance (default: this machine's)
    num_cpus: float | None = None  # CPUs reserved per run (default: the run's threads)
    num_gpus: float = 1.0  # GPUs reserved per cuda run
    retries: int = 1  # Ray retries of a run whose worker died; a run that fails by itself is not retried
    report: bool = True
    history: bool = True
    history_path: Path | None = None
    setup: Callable[[], None] | None = None  # called in the driver and in each worker before the run
    build_fn: Callable[[Any], Any] | None = None  # RunOptions.build_fn (tests inject fakes); picklable


@dataclass
class SweepOutcome:
    out_dir: Path
    exit_code: int
    summary: dict[str, Any]
    report: Path | None = None


def run_sweep(plan: SweepPlan, opts: SweepOptions, echo: Callable[[str], None] = print) -> SweepOutcome:
    """Run every point of ``plan`` as a Ray task: OUT/<slug>/ per run, OUT/sweep.json, OUT/report.html."""
    from ..measurements import load_all
    from ..suites import load_suite

    if opts.setup is not None:
        opts.setup()
    suite = load_suite(plan.suite, known_kinds=load_all())
    if plan.data:  # each run would refuse it; refused once, before Ray starts
        from ..runner import check_data_is_read

        check_data_is_read(suite.name, suite.kinds)
    ray = import_ray()
    out = Path(opts.out) if opts.out else rundir.default_out(f"sweep-{suite.name}")
    threads = plan.threads or suite.threads or 1
    num_cpus = opts.num_cpus if opts.num_cpus is not None else float(threads)
    suite_device = str(suite.model.get("device", "cpu"))
    entries = _prepare(plan, suite, out, opts.resume, opts.overwrite)
    if opts.resume:
        echo(f"resume: {sum(e['resumed'] for e in entries.values())} of {len(entries)} runs already finished")

    summary = new_summary(plan, suite, out, entries, ray)
    with writes(str(out / SWEEP_FILE), KEPT):
        write_summary(out, summary)
    todo = [p for p in plan.points if not entries[p.slug]["resumed"]]
    started_ray = False
    interrupted = False
    newly_done: list[str] = []
    try:
        if todo:
            started_ray = connect(ray, opts.address, opts.local_cpus, echo)
            summary["ray"] = cluster_facts(ray, opts.address)
            # max_calls=1: a fresh worker process per run (see the module docstring); Ray takes it only here
            remote = ray.remote(max_calls=1)(run_point)
            pending: dict[Any, SweepPoint] = {}
            checked: set[float] = set()
            for p in todo:
                device = p.device or suite_device
                gpus = opts.num_gpus if device.startswith("cuda") else 0
                if gpus not in checked:
                    check_feasible(ray, num_cpus, gpus, local=not opts.address, echo=echo)
                    checked.add(gpus)
                entries[p.slug]["resources"] = {"num_cpus": num_cpus, "num_gpus": gpus}
                task = _task(plan, suite, p, opts, out / p.slug)
                ref = remote.options(
                    num_cpus=num_cpus,
                    num_gpus=gpus,
                    max_retries=opts.retries,
                    retry_exceptions=False,
                    name=f"vemi-sweep:{p.slug}",
                ).remote(task)
                pending[ref] = p
            echo(f"sweep: {len(todo)} runs submitted to Ray ({num_cpus:g} CPUs each), output in {out}")
            done = len(plan.points) - len(todo)
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    point = pending.pop(ready[0])
                    entry = entries[point.slug]
                    try:
                        res = ray.get(ready[0])
                    except Exception as exc:  # the worker died (crash, OOM kill, node lost) after retries
                        res = {"status": FAILED, "error": f"{type(exc).__name__}: {ray_error_line(exc)}"}
                    with writes(str(out / point.slug), KEPT):
                        _store(out / point.slug, entry, res)
                    if rs.RESULTS_FILE in (res.get("files") or {}):
                        newly_done.append(point.slug)
                    done += 1
                    echo(progress_line(done, len(plan.points), point, entry))
                    with writes(str(out / SWEEP_FILE), KEPT):
                        write_summary(out, summary)
            except KeyboardInterrupt:
                interrupted = True
                for ref, point in pending.items():
                    ray.cancel(ref, force=True)
                    entries[point.slug].update(status=INTERRUPTED, error="interrupted")
    finally:
        if started_ray:
            ray.shutdown()

    report = None
    if opts.report and not interrupted:
        report = _comparison_report(out, entries, echo)
    summary["report"] = str(report) if report else None
    summary["finished"] = now_iso()
    summary["counts"] = counts(entries)
    with writes(str(out / SWEEP_FILE), KEPT):
        write_summary(out, summary)
    if opts.history and not interrupted:
        _append_history(out, newly_done, opts.history_path, echo)

    code = rundir.exit_code((e["status"] for e in entries.values()), interrupted)
    return SweepOutcome(out, code, summary, report)


def _prepare(
    plan: SweepPlan, suite: Any, out: Path, resume: bool, overwrite: bool = False
) -> dict[str, dict[str, Any]]:
    """Each point's sweep.json entry. --resume: a run whose results.json is finished (VALID/INVALID) is
    kept; one with a partial file is continued by the runner's own resume; the rest run afresh."""
    rundir.refuse_other_kind(out, (rs.RESULTS_FILE, rs.PARTIAL_FILE, rs.SAMPLES_FILE), "run")
    if not resume:
        rundir.refuse_to_destroy(out, (SWEEP_FILE,), overwrite)
    rundir.check_writable(out)
    old: dict[str, dict[str, Any]] = {}
    if resume:
        try:
            prev = json.loads((out / SWEEP_FILE).read_text(encoding="utf-8"))
            old = {e["slug"]: e for e in prev.get("points", [])}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OptionsError(f"--resume: {out} holds no readable {SWEEP_FILE} ({exc})") from None
    entries = {}
    for p in plan.points:
        fp = point_fingerprint(plan, p, suite.sha256)
        run_dir = out / p.slug
        entry: dict[str, Any] = {
            "slug": p.slug,
            "variant": p.variant,
            "flags": list(p.flags),
            "seed": p.seed,
            "device": p.device,
            "run_dir": str(run_dir),
            "status": PENDING,
            "error": None,
            "host": None,
            "node_id": None,
            "wall_s": None,
            "resumed": False,
            "fingerprint": fp,
            "metrics": [],
        }
        if resume and p.slug in old:
            rundir.check_same_run(run_dir, old[p.slug].get("fingerprint") or {}, fp)
            doc = read_run(run_dir)
            if doc is not None and doc.get("status") in FINISHED:
                entry.update({k: old[p.slug].get(k) for k in ("host", "node_id", "wall_s")})
                entry.update(status=doc["status"], resumed=True)
                from_run(entry, doc)
            entries[p.slug] = entry
            continue
        if not resume:  # a run directory of an earlier sweep must not pass for this one's
            rundir.clear(run_dir, (*SHIPPED_FILES, ERROR_FILE))
        entries[p.slug] = entry
    out.mkdir(parents=True, exist_ok=True)
    return entries


def read_run(run_dir: Path) -> dict[str, Any] | None:
    try:
        return rs.read_results(run_dir)
    except Exception:  # missing or unreadable: the run is done again
        return None


def _task(plan: SweepPlan, suite: Any, p: SweepPoint, opts: SweepOptions, run_dir: Path) -> dict[str, Any]:
    options: dict[str, Any] = {**plan.run_fields(), "seed": p.seed}
    if p.device is not None:
        options["device"] = p.device
    elif str(suite.model.get("device", "cpu")).startswith("cuda"):
        options["device"] = "cuda"  # Ray's CUDA_VISIBLE_DEVICES leaves the task's GPU as cuda:0
    if p.suite_variant is not None:
        options["variants"] = [p.suite_variant]
    else:
        options["flags"] = [",".join(p.flags)]
    resume_files = {}
    if (run_dir / rs.PARTIAL_FILE).is_file():  # only there under --resume (_prepare wiped it otherwise)
        names = (rs.PARTIAL_FILE, rs.LOG_FILE)  # the runner's resume reads the one, appends to the other
        resume_files = {n: (run_dir / n).read_bytes() for n in names if (run_dir / n).is_file()}
    return {
        "slug": p.slug,
        "suite_path": str(Path(suite.path).resolve()) if suite.path else f"{suite.name}.toml",
        "suite_content": suite.content,
        "suite_sha256": suite.sha256,
        "options": options,
        "report": opts.report,
        "resume_files": resume_files,
        "setup": opts.setup,
        "build_fn": opts.build_fn,
    }


def _store(run_dir: Path, entry: dict[str, Any], res: dict[str, Any]) -> None:
    """Write what a task sent back into OUT/<slug>/ and update its sweep.json entry."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in (res.get("files") or {}).items():
        write_atomic(run_dir / name, data)
    if res.get("traceback"):
        (run_dir / ERROR_FILE).write_text(res["traceback"], encoding="utf-8")
    entry.update({k: res.get(k) for k in ("status", "error", "host", "node_id", "wall_s", "gpu_ids")})
    doc = read_run(run_dir) if res.get("files") else None
    if doc is not None:
        from_run(entry, doc)
        here = git_state().get("git_commit")
        there = (doc.get("environment") or {}).get("git_commit")
        if here and there and here != there:
            entry["code_mismatch"] = f"run on commit {there[:12]}, driver on {here[:12]}"


def _comparison_report(
    out: Path, entries: dict[str, dict[str, Any]], echo: Callable[[str], None]
) -> Path | None:
    dirs = [Path(e["run_dir"]) for e in entries.values() if (Path(e["run_dir"]) / rs.RESULTS_FILE).is_file()]
    if not dirs:
        return None
    try:
        from ..report import build_report
    except ImportError as exc:
        echo(f"note: comparison report not built (vemi_eval.report unavailable: {exc})")
        return None
    try:
        return Path(build_report(dirs, out / rs.REPORT_FILE))
    except Exception as exc:  # a broken report must not lose the sweep: every run is on disk
        echo(f"warning: comparison report not built: {type(exc).__name__}: {one_line(exc)}")
        return None


def _append_history(out: Path, slugs: list[str], path: Path | None, echo: Callable[[str], None]) -> None:
    from ..history import append_run

    for slug in slugs:
        doc = read_run(out / slug)
        if doc is None:
            continue
        try:
            append_run(doc, out_dir=(out / slug).resolve(), path=path)
        except Exception as exc:  # the history is a convenience: the runs are on disk regardless
            echo(f"warning: {slug} not added to the history: {type(exc).__name__}: {one_line(exc)}")
            return

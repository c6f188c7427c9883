"""`vemi-eval sweep`: one suite x a grid of flag sets (x seeds x devices), one Ray task per variant.

A sweep point is ONE complete suite run: the suite's baseline plus ONE variant, measured side by side by
the same process on the same machine, so every ratio to the baseline compares like with like (never
across machines). The points are spread over a Ray cluster, or a local Ray instance: Ray is the
distributed engine; nothing here schedules, places or retries work by itself.

Why the runner's Python API in a fresh Ray worker (``max_calls=1``) rather than a subprocess: a fresh
interpreter per run keeps torch's thread pool, the allocator's high-water mark (peak memory is measured
on it), the CUDA context and the logging handlers of one run away from the next, which is the isolation a
subprocess would give; a worker that crashes (segfault, OOM kill) takes only its own run down and Ray
reports it for that task. Calling ``run_suite`` directly returns the outcome without parsing a CLI.

Files: a worker runs in a scratch directory of its own node and sends the run directory's files back; the
driver writes them under ``OUT/<slug>/``, so OUT needs no shared filesystem. What every node must have:
the same vemi-eval (its git commit is recorded and compared), and the checkpoints, configs and data at the
paths the suite names. The suite file itself travels with the task (by content; its hash is checked).

Sweep file (TOML, data only; an alternative to --grid/--seeds/--devices, which add to / override it)::

    [sweep]
    suite = "memory"                  # required: suite name, or a path relative to this file
    description = "..."               # optional
    seeds = [0, 1]                    # each variant once per seed (default: the suite's seed)
    devices = ["cpu"]                 # each variant once per device: cpu | cuda (default: the suite's)
    quick = true                      # the suite's quick settings
    threads = 1                       # torch threads per run (and CPUs reserved per run)
    preset = "tiny"                   # config, checkpoint, codec_checkpoint, data: as `vemi-eval run`

    [[variants]]                      # named flag sets, each one run beside the baseline
    name = "int8-gptq"
    flags = ["int8=gptq"]

    [grid]                            # the cartesian product of the axes; "" = the axis off
    weights = ["", "int8=rtn", "int4=awq"]
    kv = ["", "kv-compress"]          # -> int8=rtn | int4=awq | kv-compress | int8=rtn,kv-compress | ...

Without any flag set (no --grid, [[variants]] or [grid]), the suite's own non-baseline variants are the
sweep: `vemi-eval sweep memory` runs each of them beside the baseline in a task of its own.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from . import results as rs
from .errors import (
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    OptionsError,
    SuiteError,
    one_line,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SWEEP_SCHEMA = "vemi-eval/sweep"
SWEEP_SCHEMA_VERSION = 1
SWEEP_FILE = "sweep.json"
ERROR_FILE = "task-error.txt"  # the traceback of a run that failed before the runner could log it
RAY_MIN_VERSION = (2, 9)
VALID, INVALID, INCOMPLETE, FAILED = "VALID", "INVALID", "INCOMPLETE", "FAILED"
PENDING, INTERRUPTED = "PENDING", "INTERRUPTED"
FINISHED = (VALID, INVALID)  # a run whose results.json is final: --resume skips it
SHIPPED_FILES = (rs.RESULTS_FILE, rs.PARTIAL_FILE, rs.SAMPLES_FILE, rs.LOG_FILE, rs.REPORT_FILE)
DEVICES = ("cpu", "cuda")


# --- the plan -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPoint:
    """One task: the suite's baseline + one variant, with a seed and a device (None: the suite's)."""

    slug: str  # its directory under OUT
    variant: str  # a label: the [[variants]] name, the suite variant's name, or the flags joined by ","
    flags: tuple[str, ...]
    suite_variant: str | None = None  # run the suite's own variant of this name (its [kind] tables apply)
    seed: int | None = None
    device: str | None = None


@dataclass
class SweepPlan:
    suite: str  # name or path of the suite, as the runner takes it
    points: list[SweepPoint]
    skipped: list[dict[str, str]] = field(default_factory=list)  # grid combinations left out, and why
    quick: bool = False
    threads: int | None = None
    preset: str | None = None
    config: str | None = None
    checkpoint: str | None = None
    codec_checkpoint: str | None = None
    data: str | None = None
    description: str = ""
    source: str | None = None  # the sweep file, when there is one

    def run_fields(self) -> dict[str, Any]:
        """What every point's RunOptions share (and what a resumed sweep must share with the first)."""
        return {
            "quick": self.quick,
            "threads": self.threads,
            "preset": self.preset,
            "config": self.config,
            "checkpoint": self.checkpoint,
            "codec_checkpoint": self.codec_checkpoint,
            "data": self.data,
        }


def parse_grid(text: str) -> list[tuple[str, ...]]:
    """``"int8=rtn;int8=gptq;int4=awq,attn=sdpa"`` -> one flag set per ';' entry (',' joins flags)."""
    sets = []
    for i, entry in enumerate(text.split(";")):
        flags = tuple(f.strip() for f in entry.split(",") if f.strip())
        if not flags:
            raise OptionsError(f"--grid {text!r}: entry #{i + 1} has no flag")
        sets.append(flags)
    return sets


def expand_axes(axes: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """The cartesian product of the [grid] axes, each combination one flag set; "" leaves an axis off and
    the all-off combination (the baseline itself) is left out."""
    out = []
    for choice in itertools.product(*axes.values()):
        flags = tuple(f.strip() for alt in choice for f in alt.split(",") if f.strip())
        if flags:
            out.append(flags)
    return out


def slugify(text: str) -> str:
    """A directory name: "int8=rtn,attn=sdpa" -> "int8-rtn_attn-sdpa"."""
    s = text.strip().lower().replace(",", "_").replace("=", "-")
    s = re.sub(r"[^a-z0-9._-]+", "-", s).strip("-._")
    return s or "variant"


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise OptionsError(f"{what} {text!r}: integers separated by ',' expected") from None


def _check_device(dev: str, where: str) -> str:
    dev = dev.strip()
    if dev.startswith("cuda:"):
        raise OptionsError(f"{where}: device {dev!r}: Ray gives each task its GPU, write 'cuda'")
    if dev not in DEVICES:
        raise OptionsError(f"{where}: unknown device {dev!r} ({' or '.join(DEVICES)})")
    return dev


_SWEEP_KEYS: dict[str, type | tuple[type, ...]] = {
    "suite": str,
    "description": str,
    "seeds": list,
    "devices": list,
    "quick": bool,
    "threads": int,
    "preset": str,
    "config": str,
    "checkpoint": str,
    "codec_checkpoint": str,
    "data": str,
}
_PATH_KEYS = ("config", "checkpoint", "codec_checkpoint", "data")


def is_sweep_file(target: str) -> bool:
    """A TOML file with a [sweep] table (a suite file has a [suite] table instead)."""
    p = Path(target)
    if p.suffix != ".toml" or not p.is_file():
        return False
    try:
        return "sweep" in tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def read_sweep_file(path: Path) -> dict[str, Any]:
    """Validate a sweep file: {suite, description, seeds, devices, quick, threads, preset, config,
    checkpoint, codec_checkpoint, data, variants: [(name, flags)], axes: {axis: [alternatives]}}.
    Paths are made absolute relative to the file. SuiteError (one line) names what is wrong."""
    where = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"cannot read sweep file {where}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"invalid sweep file {where}: {exc}") from None
    for key in doc:
        if key not in ("sweep", "variants", "grid"):
            raise SuiteError(f"{where}: unknown table [{key}] (known: [sweep], [[variants]], [grid])")
    head = doc.get("sweep")
    if not isinstance(head, dict):
        raise SuiteError(f"{where}: [sweep] must be a table")
    for k, v in head.items():
        if k not in _SWEEP_KEYS:
            raise SuiteError(f"{where}: [sweep] unknown key {k!r} (known keys: {', '.join(_SWEEP_KEYS)})")
        if not isinstance(v, _SWEEP_KEYS[k]) or (isinstance(v, bool) and _SWEEP_KEYS[k] is int):
            raise SuiteError(f"{where}: [sweep] {k!r} has the wrong type: {v!r}")
    if "suite" not in head:
        raise SuiteError(f"{where}: [sweep] needs a 'suite' (a suite name or a path)")
    out: dict[str, Any] = dict(head)
    suite = head["suite"]
    if suite.endswith(".toml") or "/" in suite:
        out["suite"] = str((path.parent / suite).resolve())
    for k in _PATH_KEYS:
        if k in out and not Path(out[k]).is_absolute():
            out[k] = str((path.parent / out[k]).resolve())
    if "seeds" in out and not all(isinstance(s, int) and not isinstance(s, bool) for s in out["seeds"]):
        raise SuiteError(f"{where}: [sweep] seeds must be integers")
    if "devices" in out:
        if not all(isinstance(d, str) for d in out["devices"]):
            raise SuiteError(f"{where}: [sweep] devices must be strings")
        out["devices"] = [_check_device(d, where) for d in out["devices"]]

    variants = []
    raw = doc.get("variants", [])
    if not isinstance(raw, list):
        raise SuiteError(f"{where}: [[variants]] must be an array of tables")
    for i, v in enumerate(raw):
        if not isinstance(v, dict) or set(v) - {"name", "flags", "description"}:
            raise SuiteError(f"{where}: variant #{i + 1}: keys are name, flags, description")
        flags = v.get("flags", [])
        if isinstance(flags, str):
            flags = [f.strip() for f in flags.split(",") if f.strip()]
        if not isinstance(flags, list) or not flags or not all(isinstance(f, str) for f in flags):
            raise SuiteError(f"{where}: variant #{i + 1}: flags must be a non-empty list of strings")
        name = v.get("name", ",".join(flags))
        if not isinstance(name, str) or not name.strip():
            raise SuiteError(f"{where}: variant #{i + 1}: name must be a non-empty string")
        variants.append((name.strip(), tuple(flags)))
    out["variants"] = variants

    axes = doc.get("grid", {})
    if not isinstance(axes, dict):
        raise SuiteError(f"{where}: [grid] must be a table of axes")
    for axis, alts in axes.items():
        if not isinstance(alts, list) or not alts or not all(isinstance(a, str) for a in alts):
            raise SuiteError(f"{where}: [grid] {axis!r} must be a non-empty list of flag strings")
    out["axes"] = {k: list(v) for k, v in axes.items()}
    return out


def plan_sweep(
    suite: Any,
    suite_arg: str,
    *,
    flag_sets: Sequence[tuple[str, tuple[str, ...]]] = (),
    axes: dict[str, list[str]] | None = None,
    seeds: Sequence[int] | None = None,
    devices: Sequence[str] | None = None,
    **run_fields: Any,
) -> SweepPlan:
    """The points of a sweep of ``suite`` (a loaded Suite): named flag sets, then the [grid] product;
    with neither, the suite's own non-baseline variants. Every point x every seed x every device.

    An unknown flag, a bad value or a conflict in a set the user wrote is a FlagError (exit 2 before any
    work); a conflicting combination of the [grid] product is left out and listed in ``skipped``."""
    from reference_model.enhancements import FlagError, parse_flags

    def check(flags: tuple[str, ...]) -> None:
        parse_flags(list(flags), device="cuda")  # "cuda": a GPU-only flag is the worker's to judge

    baseline = suite.variants[0]
    chosen: list[tuple[str, tuple[str, ...], str | None]] = []  # (label, flags, suite variant name)
    seen: dict[frozenset[str], str] = {frozenset(baseline.flags): baseline.name}
    skipped: list[dict[str, str]] = []
    for label, flags in flag_sets:
        try:
            check(flags)
        except FlagError as exc:
            raise FlagError(f"variant {label!r}: {exc}") from None
        key = frozenset(flags)
        if key in seen:
            raise OptionsError(f"variant {label!r} has the same flags as {seen[key]!r}")
        seen[key] = label
        chosen.append((label, flags, None))
    for flags in expand_axes(axes or {}):
        label = ",".join(flags)
        try:
            check(flags)
        except FlagError as exc:
            skipped.append({"variant": label, "reason": one_line(exc)})
            continue
        if frozenset(flags) in seen:
            continue  # the same set already listed (or the baseline's own)
        seen[frozenset(flags)] = label
        chosen.append((label, flags, None))
    if not flag_sets and not axes:
        chosen = [(v.name, tuple(v.flags), v.name) for v in suite.variants[1:]]
        if not chosen:
            raise OptionsError(
                f"suite {suite.name!r} has only its baseline: give flag sets with --grid or a sweep file"
            )
    if not chosen:
        raise OptionsError("the sweep has no variant to run (every [grid] combination was left out)")

    seed_list: list[int | None] = list(seeds) if seeds else [None]
    device_list: list[str | None] = list(devices) if devices else [None]
    for what, values in (("seeds", seed_list), ("devices", device_list)):
        if len(set(values)) != len(values):
            raise OptionsError(f"{what} listed twice: {values}")
    points = []
    slugs: dict[str, str] = {}
    for (label, flags, suite_variant), seed, device in itertools.product(chosen, seed_list, device_list):
        slug = slugify(label)
        if len(seed_list) > 1:
            slug += f"-seed{seed}"
        if len(device_list) > 1:
            slug += f"-{device}"
        if slug in slugs:
            raise OptionsError(f"variants {slugs[slug]!r} and {label!r} give the same directory {slug!r}")
        slugs[slug] = label
        dev = device or str(suite.model.get("device", "cpu"))
        try:  # a GPU-only flag on a cpu point: left out with its reason, as the runner skips such variants
            parse_flags(list(flags), device=dev)
        except FlagError as exc:
            skipped.append({"variant": f"{label} on {dev}", "reason": one_line(exc)})
            continue
        points.append(SweepPoint(slug, label, tuple(flags), suite_variant, seed, device))
    if not points:
        raise OptionsError("the sweep has no variant this device can run: " + skipped[-1]["reason"])
    return SweepPlan(suite=suite_arg, points=points, skipped=skipped, **run_fields)


def point_fingerprint(plan: SweepPlan, point: SweepPoint, suite_sha256: str) -> dict[str, Any]:
    """What makes a point's run what it is: a resumed sweep may skip a run only if this is unchanged."""
    return {
        "suite_sha256": suite_sha256,
        "flags": list(point.flags),
        "suite_variant": point.suite_variant,
        "seed": point.seed,
        "device": point.device,
        **plan.run_fields(),
    }


# --- one task (runs in a Ray worker) -------------------------------------------------------------------
def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """One sweep point in this process: the runner in a scratch directory. Returns the run directory's
    files, the status and where it ran; a failed run is returned (status FAILED, one-line error), never
    raised, so that the driver can tell a run that failed from a worker that died."""
    started = time.time()
    result: dict[str, Any] = {"slug": task["slug"], "host": socket.gethostname(), "pid": os.getpid()}
    result.update(_ray_placement())
    scratch = Path(tempfile.mkdtemp(prefix="vemi-sweep-"))
    run_dir = scratch / task["slug"]
    run_dir.mkdir()
    try:
        if task.get("setup") is not None:
            task["setup"]()  # e.g. imports registering measurement kinds or flags of one's own
        for name, data in (task.get("resume_files") or {}).items():
            (run_dir / name).write_bytes(data)
        from .runner import RunOptions, run_suite

        opts = RunOptions(
            suite=_suite_here(task, scratch),
            out=str(run_dir),
            resume=bool(task.get("resume_files")),
            report=task["report"],
            history=False,  # the driver keeps the history, on its own machine
            progress=False,
            build_fn=task.get("build_fn"),
            **task["options"],
        )
        outcome = run_suite(opts, echo=lambda m: print(f"[{task['slug']}] {m}", flush=True))
        errors = outcome.results.get("errors") or []
        missing = outcome.results.get("missing") or []
        error = None
        if errors:
            error = f"{errors[0]['kind']}/{errors[0]['variant']}: {one_line(Exception(errors[0]['error']))}"
            error += f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        elif missing:
            error = f"not measured: {', '.join(missing)}"
        result.update(status=outcome.status, error=error)
    except Exception as exc:  # a user error (one line) or a harness bug: this run failed, the others go on
        result.update(status=FAILED, error=f"{type(exc).__name__}: {one_line(exc)}")
        result["traceback"] = traceback.format_exc()
    result["files"] = {n: (run_dir / n).read_bytes() for n in SHIPPED_FILES if (run_dir / n).is_file()}
    result["wall_s"] = round(time.time() - started, 3)
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def _suite_here(task: dict[str, Any], scratch: Path) -> str:
    """The suite file on this node: the driver's path when it holds the same text (its relative paths then
    resolve as on the driver), else the shipped text written into the scratch directory."""
    path = Path(task["suite_path"])
    import hashlib

    try:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == task["suite_sha256"]:
            return str(path)
    except OSError:
        pass
    copy = scratch / path.name
    copy.write_text(task["suite_content"], encoding="utf-8")
    return str(copy)


def _ray_placement() -> dict[str, Any]:
    try:
        import ray

        if ray.is_initialized():
            return {"node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": list(ray.get_gpu_ids())}
    except Exception:  # outside Ray (a test calling run_point directly): no placement to report
        pass
    return {"node_id": None, "gpu_ids": []}


# --- the driver ------------------------------------------------------------------------------------------
@dataclass
class SweepOptions:
    out: str | None = None  # default runs/sweep-SUITE-TIME
    resume: bool = False
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


def import_ray() -> Any:
    """Ray, or one line (exit 2) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise OptionsError("`vemi-eval sweep` needs Ray: pip install 'vemi-eval[dist]' (ray>=2.9)") from None
    try:
        version = tuple(int(x) for x in ray.__version__.split(".")[:2])
    except ValueError:
        version = RAY_MIN_VERSION
    if version < RAY_MIN_VERSION:
        raise OptionsError(f"`vemi-eval sweep` needs ray>=2.9, found {ray.__version__}")
    return ray


def run_sweep(plan: SweepPlan, opts: SweepOptions, echo: Callable[[str], None] = print) -> SweepOutcome:
    """Run every point of ``plan`` as a Ray task: OUT/<slug>/ per run, OUT/sweep.json, OUT/report.html."""
    from .measurements import load_all
    from .suites import load_suite

    if opts.setup is not None:
        opts.setup()
    suite = load_suite(plan.suite, known_kinds=load_all())
    ray = import_ray()
    out = Path(opts.out) if opts.out else Path("runs") / f"sweep-{suite.name}-{datetime.now():%Y%m%d-%H%M%S}"
    threads = plan.threads or suite.threads or 1
    num_cpus = opts.num_cpus if opts.num_cpus is not None else float(threads)
    suite_device = str(suite.model.get("device", "cpu"))
    entries = _prepare(plan, suite, out, opts.resume)
    if opts.resume:
        echo(f"resume: {sum(e['resumed'] for e in entries.values())} of {len(entries)} runs already finished")

    summary = _summary(plan, suite, out, entries, ray)
    _write_summary(out, summary)
    todo = [p for p in plan.points if not entries[p.slug]["resumed"]]
    started_ray = False
    interrupted = False
    newly_done: list[str] = []
    try:
        if todo:
            started_ray = _connect(ray, opts, echo)
            summary["ray"] = _cluster_facts(ray, opts.address)
            # max_calls=1: a fresh worker process per run (see the module docstring); Ray takes it only here
            remote = ray.remote(max_calls=1)(run_point)
            pending: dict[Any, SweepPoint] = {}
            checked: set[float] = set()
            for p in todo:
                device = p.device or suite_device
                gpus = opts.num_gpus if device.startswith("cuda") else 0
                if gpus not in checked:
                    _check_feasible(ray, num_cpus, gpus, local=not opts.address, echo=echo)
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
                        res = {"status": FAILED, "error": f"{type(exc).__name__}: {_ray_error_line(exc)}"}
                    _store(out / point.slug, entry, res)
                    if rs.RESULTS_FILE in (res.get("files") or {}):
                        newly_done.append(point.slug)
                    done += 1
                    echo(_progress_line(done, len(plan.points), point, entry))
                    _write_summary(out, summary)
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
    summary["finished"] = rs.now_iso()
    summary["counts"] = _counts(entries)
    _write_summary(out, summary)
    if opts.history and not interrupted:
        _append_history(out, newly_done, opts.history_path, echo)

    code = _exit_code(entries, interrupted)
    return SweepOutcome(out, code, summary, report)


def _prepare(plan: SweepPlan, suite: Any, out: Path, resume: bool) -> dict[str, dict[str, Any]]:
    """Each point's sweep.json entry. --resume: a run whose results.json is finished (VALID/INVALID) is
    kept; one with a partial file is continued by the runner's own resume; the rest run afresh."""
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
            before = old[p.slug].get("fingerprint") or {}
            diff = [k for k in fp if json.dumps(before.get(k)) != json.dumps(fp[k])]
            if diff:
                raise OptionsError(f"--resume: {run_dir} was made with a different {', '.join(diff)}")
            doc = _read_run(run_dir)
            if doc is not None and doc.get("status") in FINISHED:
                entry.update({k: old[p.slug].get(k) for k in ("host", "node_id", "wall_s")})
                entry.update(status=doc["status"], resumed=True)
                _from_run(entry, doc)
            entries[p.slug] = entry
            continue
        if not resume:  # a run directory of an earlier sweep must not pass for this one's
            for name in (*SHIPPED_FILES, ERROR_FILE):
                (run_dir / name).unlink(missing_ok=True)
        entries[p.slug] = entry
    out.mkdir(parents=True, exist_ok=True)
    return entries


def _read_run(run_dir: Path) -> dict[str, Any] | None:
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
        tmp = run_dir / (name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, run_dir / name)
    if res.get("traceback"):
        (run_dir / ERROR_FILE).write_text(res["traceback"], encoding="utf-8")
    entry.update({k: res.get(k) for k in ("status", "error", "host", "node_id", "wall_s", "gpu_ids")})
    doc = _read_run(run_dir) if res.get("files") else None
    if doc is not None:
        _from_run(entry, doc)
        here = rs.git_state().get("git_commit")
        there = (doc.get("environment") or {}).get("git_commit")
        if here and there and here != there:
            entry["code_mismatch"] = f"run on commit {there[:12]}, driver on {here[:12]}"


def _from_run(entry: dict[str, Any], doc: dict[str, Any]) -> None:
    """What the run's results.json says: the seed and device it ran with, the ratios it measured."""
    entry["run_seed"] = doc.get("seed")
    entry["run_device"] = (doc.get("model") or {}).get("device")
    entry["metrics"] = key_metrics(doc)


def key_metrics(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The variant's records that have a ratio to the baseline (measured side by side in that run)."""
    base = next((v["name"] for v in doc.get("variants", []) if v.get("is_baseline")), None)
    keys = ("metric", "condition", "value", "unit", "ratio_to_baseline", "ratio_ci_low", "ratio_ci_high")
    out = []
    for m in doc.get("metrics", []):
        if m.get("variant") == base or m.get("ratio_to_baseline") is None:
            continue
        out.append({**{k: m.get(k) for k in keys}, "status": m.get("status")})
    return out


def _summary(
    plan: SweepPlan, suite: Any, out: Path, entries: dict[str, dict[str, Any]], ray: Any
) -> dict[str, Any]:
    return {
        "schema": SWEEP_SCHEMA,
        "schema_version": SWEEP_SCHEMA_VERSION,
        "suite": {
            "name": suite.name,
            "path": str(suite.path) if suite.path else None,
            "sha256": suite.sha256,
        },
        "baseline": {"name": suite.variants[0].name, "flags": list(suite.variants[0].flags)},
        "sweep_file": plan.source,
        "description": plan.description,
        "options": plan.run_fields(),
        "started": rs.now_iso(),
        "finished": None,
        "driver": {"host": socket.gethostname(), **rs.git_state()},
        "ray": {"version": getattr(ray, "__version__", None)},
        "skipped": plan.skipped,
        "counts": _counts(entries),
        "report": None,
        "points": list(entries.values()),
    }


def _write_summary(out: Path, summary: dict[str, Any]) -> None:
    summary["counts"] = _counts({e["slug"]: e for e in summary["points"]})
    tmp = out / (SWEEP_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out / SWEEP_FILE)


def _counts(entries: dict[str, dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in entries.values():
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    return counts


def _connect(ray: Any, opts: SweepOptions, echo: Callable[[str], None]) -> bool:
    """Join --address, or reuse a Ray already initialised here, or start a local instance; True when this
    call started it (and so shuts it down at the end)."""
    import logging

    if ray.is_initialized():
        return False
    if opts.address:
        try:
            ray.init(address=opts.address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:
            raise OptionsError(
                f"--address {opts.address}: cannot join the Ray cluster: {one_line(exc)}"
            ) from None
        return True
    cpus = opts.local_cpus or os.cpu_count() or 1
    echo(f"starting a local Ray instance ({cpus} CPUs)")
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    return True


def _cluster_facts(ray: Any, address: str | None) -> dict[str, Any]:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        "version": ray.__version__,
        "address": address or "local",
        "nodes": [
            {
                "host": n.get("NodeManagerHostname"),
                "node_id": n.get("NodeID"),
                "cpus": n.get("Resources", {}).get("CPU", 0),
                "gpus": n.get("Resources", {}).get("GPU", 0),
            }
            for n in nodes
        ],
    }


def _check_feasible(ray: Any, cpus: float, gpus: float, *, local: bool, echo: Callable[[str], None]) -> None:
    """A task no node can hold would wait forever: say so before submitting it."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPUs/{r.get('GPU', 0):g} GPUs" for r in nodes) or "no node"
    msg = f"no Ray node has {cpus:g} CPUs and {gpus:g} GPUs for one run (nodes: {have})"
    if local or not nodes:
        raise OptionsError(msg + "; lower --num-cpus/--threads or raise --local-cpus")
    echo(f"warning: {msg}; the runs wait until the cluster grows")


def _ray_error_line(exc: BaseException) -> str:
    # Ray's messages span many lines (a banner, then the cause): keep the first line that says something
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not set(line) <= set("=-*"):
            return line
    return type(exc).__name__


def _progress_line(done: int, total: int, p: SweepPoint, e: dict[str, Any]) -> str:
    where = f" on {e['host']}" if e.get("host") else ""
    took = f" in {e['wall_s']:.1f} s" if isinstance(e.get("wall_s"), (int, float)) else ""
    line = f"[{done}/{total}] {p.slug}: {e['status']}{where}{took}"
    if e.get("error"):
        line += f": {e['error']}"
    if e.get("code_mismatch"):
        line += f" (warning: {e['code_mismatch']})"
    return line


def _comparison_report(
    out: Path, entries: dict[str, dict[str, Any]], echo: Callable[[str], None]
) -> Path | None:
    dirs = [Path(e["run_dir"]) for e in entries.values() if (Path(e["run_dir"]) / rs.RESULTS_FILE).is_file()]
    if not dirs:
        return None
    try:
        from .report import build_report
    except ImportError as exc:
        echo(f"note: comparison report not built (vemi_eval.report unavailable: {exc})")
        return None
    try:
        return Path(build_report(dirs, out / rs.REPORT_FILE))
    except Exception as exc:  # a broken report must not lose the sweep: every run is on disk
        echo(f"warning: comparison report not built: {type(exc).__name__}: {one_line(exc)}")
        return None


def _append_history(out: Path, slugs: list[str], path: Path | None, echo: Callable[[str], None]) -> None:
    from .history import append_run

    for slug in slugs:
        doc = _read_run(out / slug)
        if doc is None:
            continue
        try:
            append_run(doc, out_dir=(out / slug).resolve(), path=path)
        except Exception as exc:  # the history is a convenience: the runs are on disk regardless
            echo(f"warning: {slug} not added to the history: {type(exc).__name__}: {one_line(exc)}")
            return


def _exit_code(entries: dict[str, dict[str, Any]], interrupted: bool) -> int:
    statuses = {e["status"] for e in entries.values()}
    if interrupted:
        return EXIT_INTERRUPTED
    if statuses - {VALID, INVALID}:
        return EXIT_INCOMPLETE
    if INVALID in statuses:
        return EXIT_INVALID
    return EXIT_OK


def comparison_rows(entries: Sequence[dict[str, Any]], limit: int = 30) -> tuple[list[dict[str, str]], int]:
    """Metric (+ condition) x run: the ratio to that run's own baseline; the first ``limit`` rows."""
    table: dict[str, dict[str, str]] = {}
    for e in entries:
        for m in e.get("metrics") or []:
            cond = ",".join(f"{k}={v}" for k, v in (m.get("condition") or {}).items())
            key = m["metric"] + (f" [{cond}]" if cond else "")
            cell = f"x{m['ratio_to_baseline']:.3g}"
            if m.get("ratio_ci_low") is not None:
                cell += f" [{m['ratio_ci_low']:.3g},{m['ratio_ci_high']:.3g}]"
            table.setdefault(key, {"metric": key})[e["slug"]] = cell
    rows = list(table.values())
    return rows[:limit], max(0, len(rows) - limit)


# --- the command ------------------------------------------------------------------------------------------
SWEEP_HELP = """Run SUITE over a grid of flag sets on Ray: each variant in a task of its own, beside the
suite's baseline (every ratio is measured side by side on one machine, never across machines).

\b
TARGET is a suite (a name or a path) or a sweep file (TOML with a [sweep] table; see
suites/sweeps/). Variants: --grid "int8=rtn;int8=gptq;int4=awq,attn=sdpa" (';' separates
flag sets, ',' joins the flags of one set), the sweep file's [[variants]] and [grid] product,
else the suite's own variants. Each runs once per --seeds value and per --devices value.

\b
Ray: --address joins a cluster (`ray start --head` elsewhere); by default a local Ray instance
starts with --local-cpus CPUs. Each run reserves --num-cpus CPUs (default: its threads) and one GPU
when its device is cuda. Runs that share a machine share its cores: for timing suites reserve the
cores a run must have to itself (--num-cpus), or the timings of neighbours interfere.

\b
Output: OUT/<variant>/ (a run directory as `vemi-eval run` writes), OUT/sweep.json (each run's
status, host, error, ratios) and OUT/report.html (all runs side by side). A run that fails is
reported with its error and the others go on; --resume skips the finished runs and continues the
partial ones.
"""

SWEEP_EXIT_CODES = """\b
Exit codes:
  0    every run VALID
  2    bad usage or bad input (one line on stderr), or Ray is not installed
  3    every run finished, at least one is INVALID
  4    at least one run failed or is INCOMPLETE (errors printed; `--resume` redoes only those)
  130  interrupted (finished runs are on disk; `--resume` continues)
"""


@click.command("sweep", help=SWEEP_HELP, epilog=SWEEP_EXIT_CODES)
@click.argument("target")
@click.option("--grid", multiple=True, help='Flag sets: "int8=rtn;int8=gptq;int4=awq". Repeatable.')
@click.option("--seeds", help="Comma-separated seeds; each variant runs once per seed.")
@click.option("--devices", help="Comma-separated devices (cpu, cuda); each variant runs once per device.")
@click.option("--preset", help="Model preset: tiny (default), moshi-7b, moshi-2b.")
@click.option("--config", type=click.Path(dir_okay=False), help="LM config JSON (Moshi format).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="LM weights (same path on every node).")
@click.option(
    "--codec-checkpoint", type=click.Path(dir_okay=False), help="Codec weights (same path everywhere)."
)
@click.option("--threads", type=int, help="torch threads per run (default: the suite's, else 1).")
@click.option("--quick", is_flag=True, help="The suite's quick settings.")
@click.option(
    "--data", type=click.Path(), help="Data directory for the quality measurements (on every node)."
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Sweep directory (default runs/sweep-SUITE-TIME)."
)
@click.option(
    "--resume", is_flag=True, help="Continue the sweep in --out: skip finished runs, resume partial ones."
)
@click.option("--address", help="Ray cluster address to join (e.g. ray://head:10001, or auto).")
@click.option("--local-cpus", type=int, help="CPUs of the local Ray instance (default: this machine's).")
@click.option("--num-cpus", type=float, help="CPUs reserved per run (default: its threads).")
@click.option("--num-gpus", type=float, default=1.0, show_default=True, help="GPUs reserved per cuda run.")
@click.option(
    "--retries",
    type=int,
    default=1,
    show_default=True,
    help="Ray retries of a run whose worker died (crash, OOM kill, node lost); a failed run is not retried.",
)
@click.option("--no-report", is_flag=True, help="No report.html (per run nor comparison).")
@click.option("--no-history", is_flag=True, help="Do not append the runs to the SQLite history.")
@click.option("--history", "history_path", type=click.Path(dir_okay=False), help="History database.")
def sweep_command(
    target: str,
    grid: tuple[str, ...],
    seeds: str | None,
    devices: str | None,
    preset: str | None,
    config: str | None,
    checkpoint: str | None,
    codec_checkpoint: str | None,
    threads: int | None,
    quick: bool,
    data: str | None,
    out: str | None,
    resume: bool,
    address: str | None,
    local_cpus: int | None,
    num_cpus: float | None,
    num_gpus: float,
    retries: int,
    no_report: bool,
    no_history: bool,
    history_path: str | None,
) -> int:
    if resume and not out:
        raise click.UsageError("--resume needs --out (the sweep directory to continue)")
    for name, value, low in (
        ("--num-cpus", num_cpus, 0),
        ("--num-gpus", num_gpus, 0),
        ("--retries", retries, 0),
    ):
        if value is not None and value < low:
            raise click.BadParameter(f"must be >= {low}", param_hint=name)
    if threads is not None and threads < 1:
        raise click.BadParameter("must be >= 1", param_hint="--threads")
    plan = build_plan(
        target,
        grid=grid,
        seeds=parse_int_list(seeds, "--seeds") if seeds else None,
        devices=[_check_device(d, "--devices") for d in devices.split(",") if d.strip()] if devices else None,
        overrides={
            "preset": preset,
            "config": str(Path(config).resolve()) if config else None,
            "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
            "codec_checkpoint": str(Path(codec_checkpoint).resolve()) if codec_checkpoint else None,
            "threads": threads,
            "data": str(Path(data).resolve()) if data else None,
        },
        quick=quick,
    )
    opts = SweepOptions(
        out=out,
        resume=resume,
        address=address,
        local_cpus=local_cpus,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        retries=retries,
        report=not no_report,
        history=not no_history,
        history_path=Path(history_path) if history_path else None,
    )
    outcome = run_sweep(plan, opts, echo=lambda m: click.echo(m, err=True))
    print_summary(outcome)
    return outcome.exit_code


def build_plan(
    target: str,
    *,
    grid: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    devices: Sequence[str] | None = None,
    overrides: dict[str, Any] | None = None,
    quick: bool = False,
) -> SweepPlan:
    """TARGET (suite or sweep file) + command-line options -> the plan; the command line wins."""
    from .measurements import load_all
    from .suites import load_suite

    spec: dict[str, Any] = {"variants": [], "axes": {}}
    source = None
    if is_sweep_file(target):
        source = str(Path(target).resolve())
        spec = read_sweep_file(Path(target))
    suite_arg = spec.get("suite", target)
    suite = load_suite(suite_arg, known_kinds=load_all())
    flag_sets = list(spec["variants"])
    for g in grid:
        flag_sets += [(",".join(s), s) for s in parse_grid(g)]
    fields = {
        k: spec.get(k) for k in ("preset", "config", "checkpoint", "codec_checkpoint", "threads", "data")
    }
    fields.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if fields.get("config") and not Path(fields["config"]).is_file():
        raise OptionsError(f"config file not found: {fields['config']}")
    for key in ("checkpoint", "codec_checkpoint"):
        if fields.get(key) and fields[key] != "random" and not Path(fields[key]).is_file():
            raise OptionsError(f"checkpoint not found: {fields[key]}")
    if fields.get("data") and not Path(fields["data"]).is_dir():
        raise OptionsError(f"data directory not found: {fields['data']}")
    return plan_sweep(
        suite,
        suite_arg,
        flag_sets=flag_sets,
        axes=spec["axes"],
        seeds=seeds if seeds else spec.get("seeds"),
        devices=devices if devices else spec.get("devices"),
        quick=quick or bool(spec.get("quick", False)),
        description=spec.get("description", ""),
        source=source,
        **fields,
    )


def print_summary(outcome: SweepOutcome) -> None:
    s = outcome.summary
    points = s["points"]
    click.echo(f"sweep of {s['suite']['name']}: {len(points)} runs beside baseline {s['baseline']['name']!r}")
    for e in points:
        where = e.get("host") or "-"
        line = f"  {e['slug']:<28} {e['status']:<11} {where}"
        if e.get("resumed"):
            line += "  (finished before, kept)"
        if e.get("error"):
            line += f"  {e['error']}"
        click.echo(line)
    for sk in s.get("skipped") or []:
        click.echo(f"  left out: {sk['variant']}: {sk['reason']}")
    rows, more = comparison_rows(points)
    if rows:
        click.echo("\nratio to the baseline of the same run:")
        cols = ["metric"] + [e["slug"] for e in points]
        widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
        click.echo("  ".join(c.ljust(widths[c]) for c in cols))
        for r in rows:
            click.echo("  ".join(r.get(c, "").ljust(widths[c]) for c in cols))
        if more:
            click.echo(f"... {more} more rows in {SWEEP_FILE} and the report")
    click.echo(
        f"\nsweep directory: {outcome.out_dir}  ({SWEEP_FILE}" + (", report.html)" if outcome.report else ")")
    )

"""One sweep point, in a Ray worker: the runner in a scratch directory, its files sent back."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from .. import results as rs
from ..errors import (
    one_line,
)

FAILED = "FAILED"  # sweep.json status of a run that could not finish
SHIPPED_FILES = (rs.RESULTS_FILE, rs.PARTIAL_FILE, rs.SAMPLES_FILE, rs.LOG_FILE, rs.REPORT_FILE)


ERROR_FILE = "task-error.txt"  # the traceback of a run that failed before the runner could log it


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
        from ..recorded_run import run_suite
        from ..runner import RunOptions

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

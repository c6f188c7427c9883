"""Ray: importing it, joining or starting a cluster, the facts recorded about it, feasibility."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import (
    OptionsError,
    one_line,
)

RAY_MIN_VERSION = (2, 9)


def import_ray(what: str = "`vemi-eval sweep`") -> Any:
    """Ray, or one line (exit 2) saying that ``what`` needs it and how to install it."""
    try:
        import ray
    except ImportError:
        raise OptionsError(f"{what} needs Ray: pip install 'vemi-eval[dist]' (ray>=2.9)") from None
    try:
        version = tuple(int(x) for x in ray.__version__.split(".")[:2])
    except ValueError:
        version = RAY_MIN_VERSION
    if version < RAY_MIN_VERSION:
        raise OptionsError(f"{what} needs ray>=2.9, found {ray.__version__}")
    return ray


def connect(ray: Any, address: str | None, local_cpus: int | None, echo: Callable[[str], None]) -> bool:
    """Join ``address`` (--address), or reuse a Ray already initialised here, or start a local instance
    with ``local_cpus`` CPUs (default: this machine's); True when this call started it (and so shuts it
    down at the end)."""
    import logging

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:
            raise OptionsError(f"--address {address}: cannot join the Ray cluster: {one_line(exc)}") from None
        return True
    cpus = local_cpus or os.cpu_count() or 1
    echo(f"starting a local Ray instance ({cpus} CPUs)")
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    return True


def cluster_facts(ray: Any, address: str | None) -> dict[str, Any]:
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


def check_feasible(ray: Any, cpus: float, gpus: float, *, local: bool, echo: Callable[[str], None]) -> None:
    """A task no node can hold would wait forever: say so before submitting it."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPUs/{r.get('GPU', 0):g} GPUs" for r in nodes) or "no node"
    msg = f"no Ray node has {cpus:g} CPUs and {gpus:g} GPUs for one run (nodes: {have})"
    if local or not nodes:
        raise OptionsError(msg + "; lower --num-cpus/--threads or raise --local-cpus")
    echo(f"warning: {msg}; the runs wait until the cluster grows")


def ray_error_line(exc: BaseException) -> str:
    # Ray's messages span many lines (a banner, then the cause): keep the first line that says something
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not set(line) <= set("=-*"):
            return line
    return type(exc).__name__

"""Speech-quality evaluators: one small adapter per external scorer.

Each adapter module defines an ``EvaluatorSpec`` named ``SPEC`` that says what the scorer needs (a clean
reference signal, a transcript), which package version it is, and the sha256 of its weights, so that a
result can be traced to the exact scorer that produced it (results.json "evaluators"). Heavy packages are
imported lazily and loaded models cached at module level (loading takes seconds).

A scorer that cannot score an input raises ``EvaluatorError`` with a one-line reason; callers record the
item as failed with that reason and never substitute a number.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from ..storage import file_sha256  # noqa: F401  (re-exported: scripts and trainers read it here)

T = TypeVar("T")


class EvaluatorError(Exception):
    """A scorer could not score one input (or could not load). One-line reason."""


@dataclass(frozen=True)
class EvaluatorSpec:
    name: str
    package: str  # distribution whose version pins the scorer
    needs_reference: bool
    needs_transcript: bool
    sample_rate: int | None  # the rate the scorer works at (inputs are resampled to it)
    weights: Callable[[], list[Path]] = field(default=lambda: [])  # weight files, hashed for provenance
    method: str = ""  # how inputs are scored when that is not the package's plain call (recorded)

    def version(self) -> str:
        try:
            return metadata.version(self.package)
        except metadata.PackageNotFoundError:
            return "not installed"

    def info(self) -> dict:
        """{"version", "weights_sha256"[, "method"]} for results.json."""
        how = {"method": self.method} if self.method else {}
        try:
            files = self.weights()
        except EvaluatorError as e:
            return {"version": self.version(), "weights_sha256": None, "error": str(e), **how}
        digests = {p.name: file_sha256(p) for p in files} or None
        return {"version": self.version(), "weights_sha256": digests, **how}


def load_once(load: Callable[..., T]) -> Callable[..., T]:
    """``load`` run once per distinct arguments (loading a scorer takes seconds), under a lock since
    measurements may score from several threads; a load that raises is not cached."""
    loaded: dict[tuple[Any, ...], T] = {}
    lock = threading.Lock()

    @functools.wraps(load)
    def cached(*args: Any) -> T:
        with lock:
            if args not in loaded:
                loaded[args] = load(*args)
            return loaded[args]

    return cached


def package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EvaluatorError(f"package {package!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise EvaluatorError(f"{path} is missing from package {package!r}")
    return path


EVALUATOR_MODULES = ("asr", "wer", "pesq", "stoi", "sisdr", "dnsmos", "speaker")


def all_specs() -> dict[str, EvaluatorSpec]:
    out = {}
    for mod in EVALUATOR_MODULES:
        spec = importlib.import_module(f"{__name__}.{mod}").SPEC
        out[spec.name] = spec
    return out


def evaluators_info(names: list[str] | None = None) -> dict[str, dict]:
    """{name: {version, weights_sha256}} for the named evaluators (all when None)."""
    specs = all_specs()
    return {n: specs[n].info() for n in (names or list(specs))}

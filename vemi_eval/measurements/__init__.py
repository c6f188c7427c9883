"""Measurement kinds: the code that turns a model variant into metric records.

A suite file names measurement kinds (``latency``, ``throughput``, ``memory``, ``fidelity``, ``codec``,
``wer``, ``speaker``, ``noise``...). Each kind is a function registered here, in a module of this package
of its own (every module is imported by ``load_all``: a new file with a ``@measurement`` is a new kind).
What kinds share lives in libraries that register none (``common``: RecordMaker and the codec-side
opening; ``frame_loop``; ``_duplex``, ``_dialogue_data``) or in lower layers (``vemi_eval.data``:
the codec round trip, the streamed speech input): a kind never imports another kind.

    @measurement("latency", params=PARAMS, version=1,
                 claims={"lm_step_time": [("frame_time_p50_ms", {"stage": "lm"})]})
    def measure_latency(ctx: MeasureContext) -> Iterable[MetricRecord]: ...

The decorator registers a frozen :class:`MeasurementSpec` (the registry holds specs; the function itself
is returned unchanged). ``params`` are the kind's parameters with their defaults: the suite loader's schema
(unknown keys and wrong types are refused) and what :func:`merged_params` starts from. ``version`` is the
definition of the kind's metrics: raise it when a change makes a metric mean something else (another
input, window or formula), not for a refactor. Every record carries it, and the gate reports a metric
whose version differs between the baseline and the run as "measurement redefined" instead of comparing
the two values (vemi_eval/gate.py).

``claims`` says which of its records stand for which claim metric of the enhancement registry
(suites/claims/enhancements.toml): a glob over the record's metric name and the condition values it must
carry ("*": the key must be present). The registry reads claims only through these declarations, so a
metric renamed here is renamed for the registry too, and a test checks that every claim has one.

The runner builds the context (the variant to measure, the suite's parameters for this kind, the seed,
where raw samples go) and stores what comes back. A measurement never writes results files itself; it
hands raw per-sample rows to ``ctx.add_samples`` and returns records. A kind whose outputs other tools
read (the dialogue suite's exports for Full-Duplex-Bench's scorers) writes them under ``ctx.artifacts``,
a folder of the run directory of its own (``<run>/<kind>/<variant>/``).
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SuiteError
from ..records import MetricRecord
from ..suites import with_quick


@dataclass
class VariantRef:
    """A variant of the suite: a name, its flags, and how to build it (built lazily, once)."""

    name: str
    flags: list[str]
    build: Callable[..., Any]  # build(batch_size=1, **overrides) -> reference_model.DuplexModel
    is_baseline: bool = False


@dataclass
class MeasureContext:
    suite: str
    kind: str
    variant: VariantRef
    baseline: VariantRef
    params: dict[str, Any]  # the suite file's table for this kind
    seed: int
    quick: bool
    device: str
    data: Any = None  # data handle for quality suites (vemi_eval.data), None for systems suites
    samples: list[dict[str, Any]] = field(default_factory=list)
    skipped_inputs: list[dict[str, str]] = field(default_factory=list)  # {"input", "reason"}
    artifacts: Path | None = None  # where the kind's exported files go (None: export nothing)
    progress: Callable[[str], None] = lambda msg: None

    def add_samples(self, rows: Iterable[dict[str, Any]]) -> None:
        """Raw per-sample data (one dict per frame, utterance...); stored beside results.json."""
        for r in rows:
            self.samples.append({"suite": self.suite, "variant": self.variant.name, "kind": self.kind, **r})

    def skip_input(self, name: str, reason: str) -> None:
        """An input (a file, a row of a manifest) left out, by name and why: run.log, results.json and
        the report list every one."""
        self.skipped_inputs.append({"input": str(name), "reason": str(reason)})


class ParamsError(SuiteError, ValueError):
    """A parameter the kind does not know (the suite loader rejects them first; this guards direct calls)."""


def merged_params(ctx: MeasureContext, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The kind's declared defaults <- the suite's table <- its ``quick`` sub-table under --quick."""
    table = dict(ctx.params or {})
    quick = table.get("quick") or {}
    unknown = sorted((set(table) - {"quick"} | set(quick)) - set(defaults))
    if unknown:
        raise ParamsError(f"[{ctx.kind}] unknown parameter(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **with_quick(table, ctx.quick)}


MeasureFn = Callable[[MeasureContext], Iterable[MetricRecord]]
# claim metric -> [(glob over the record's metric name, required condition values)]
ClaimDecl = Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]]


@dataclass(frozen=True)
class MeasurementSpec:
    """A registered measurement kind: what :func:`measurement` declares, typed. Calling it measures:
    the records come back stamped with the kind's ``version``."""

    kind: str
    measure: MeasureFn
    params: Mapping[str, Any]  # declared parameters with their defaults (the suite loader's schema)
    version: int = 1
    claims: ClaimDecl = field(default_factory=dict)
    check_params: Callable[[dict[str, Any]], None] | None = None
    check_data: Callable[[dict[str, Any], dict[str, Any]], None] | None = None
    clean_heap: bool = False
    exact_metrics: tuple[str, ...] = ()
    takes_data: bool = False
    per_input: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(
                f"measurement {self.kind!r}: version must be an integer >= 1, not {self.version!r}"
            )
        if not isinstance(self.params, Mapping):
            raise TypeError(f"measurement {self.kind!r}: params must be a mapping of defaults")

    def __call__(self, ctx: MeasureContext) -> list[MetricRecord]:
        records = list(self.measure(ctx) or [])
        for r in records:
            if isinstance(r, MetricRecord):  # anything else is refused by the runner, by its type
                r.measurement_version = self.version
        return records


MEASUREMENTS: dict[str, MeasurementSpec] = {}


def measurement(
    kind: str,
    *,
    params: Mapping[str, Any],
    version: int,
    claims: ClaimDecl | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
    check_data: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    clean_heap: bool = False,
    exact: Sequence[str] = (),
    data: bool = False,
    per_input: bool = False,
) -> Callable[[MeasureFn], MeasureFn]:
    """Register a kind as a :class:`MeasurementSpec`. ``params``: its parameters with their defaults.
    ``version``: the definition of its metrics (see the module's docstring).
    ``check(params)`` raises ValueError for a parameter value it cannot run with; the
    suite loader calls it on the merged parameters (with and without quick) before any work.
    ``check_data(data, params)`` reads and checks the run's data (``ctx.data``: --data and the files the
    run names) and raises a user error (DataError: exit 2) when it cannot run; the runner calls it before
    any work, with the suite's table for the kind (quick applied).
    ``clean_heap``: the kind measures peak memory, so the runner collects garbage and trims the heap
    before it (a second or so; the other kinds do not pay it).
    ``exact``: globs over the metric names this kind computes deterministically (the same model, data and
    seed give the same value: bytes, token agreement, quality scores on fixed data). The gate compares
    those exactly; every other metric (wall-clock timings, peak RSS) through a tolerance and a U test.
    ``data``: the kind reads the audio of ``--data`` / the suite's ``[data]`` (``ctx.data``); ``--data``
    for a suite with no such kind is refused, not ignored (a kind with a ``check_data`` reads data too).
    ``per_input``: each record's ``n`` counts inputs of that data (one utterance scores once at most), so
    data with fewer inputs than the suite's ``[validity] min_samples`` is refused before any work."""

    def deco(fn: MeasureFn) -> MeasureFn:
        if kind in MEASUREMENTS:
            raise RuntimeError(f"measurement {kind!r} registered twice")
        MEASUREMENTS[kind] = MeasurementSpec(
            kind,
            fn,
            params=dict(params),
            version=version,
            claims={m: [(p, dict(w)) for p, w in rules] for m, rules in (claims or {}).items()},
            check_params=check,
            check_data=check_data,
            clean_heap=clean_heap,
            exact_metrics=tuple(exact),
            takes_data=data or check_data is not None,  # a data check reads data
            per_input=per_input,
        )
        return fn

    return deco


# --- value rules for a kind's ``check`` -------------------------------------------------------------
def at_least(params: Mapping[str, Any], key: str, low: float) -> None:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < low:
        raise ValueError(f"{key} must be a number >= {low:g}, got {v!r}")


def ints_at_least(params: Mapping[str, Any], key: str, low: int, allow_empty: bool = False) -> None:
    v = params[key]
    if not isinstance(v, list) or (not v and not allow_empty):
        raise ValueError(f"{key} must be a non-empty list of integers >= {low}, got {v!r}")
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= low for x in v):
        raise ValueError(f"{key} must hold integers >= {low}, got {v!r}")


def one_of(params: Mapping[str, Any], key: str, choices: Sequence[Any]) -> None:
    if params[key] not in choices:
        raise ValueError(f"{key} must be one of {', '.join(map(repr, choices))}, got {params[key]!r}")


def claim_rules() -> dict[str, list[tuple[str, dict[str, Any], str]]]:
    """Claim metric -> every (glob, condition, kind) that stands for it, over all registered kinds."""
    load_all()
    out: dict[str, list[tuple[str, dict[str, Any], str]]] = {}
    for kind, spec in MEASUREMENTS.items():
        for metric, rules in spec.claims.items():
            out.setdefault(metric, []).extend((p, dict(w), kind) for p, w in rules)
    return out


def is_exact(kind: str, metric: str) -> bool | None:
    """Whether ``kind`` declared ``metric`` deterministic (see :func:`measurement`); None for a kind not
    registered here (a record from an older harness or another plug-in)."""
    spec = load_all().get(kind)
    if spec is None:
        return None
    return any(fnmatch.fnmatchcase(metric, g) for g in spec.exact_metrics)


def takes_data(kind: str) -> bool:
    """Whether ``kind`` reads ``--data`` (see :func:`measurement`)."""
    spec = load_all().get(kind)
    return spec is not None and spec.takes_data


def counts_inputs(kind: str) -> bool:
    """Whether ``kind``'s records count one sample per input of its data (see :func:`measurement`)."""
    spec = load_all().get(kind)
    return spec is not None and spec.per_input


def load_all() -> dict[str, MeasurementSpec]:
    """Import every module of this package (each registers its kinds) and return the registry."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return dict(MEASUREMENTS)

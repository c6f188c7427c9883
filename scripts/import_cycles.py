"""Import cycles and upward imports between the modules of ``reference_model`` and ``vemi_eval``.

Every module is parsed with :mod:`ast`, and every ``import`` in it counts, the ones inside functions
and under ``if TYPE_CHECKING`` too: a function-local import hides a dependency, it does not remove it.
An import of ``pkg.name`` points at the module ``pkg.name`` when that file exists, else at ``pkg``.

Layers, lowest first (data flows up; a module may import its own layer or a lower one, never a higher
one; an unlisted module of ``vemi_eval`` is an error, so a new module must be placed here):

    0  reference_model.*                      the model; never imports the harness
    1  vemi_eval.{errors, records, stats, storage, timing, environment, random_weights,
                 training_budget, claim_context, claim_verdicts, rundir}
                                              plain values, files and helpers; a run directory's files
    2  vemi_eval.data.*                       corpora, synthesis, tokenisation
    3  vemi_eval.evaluators.*, vemi_eval.yardsticks   scorers of audio and text, reference codecs
    4  vemi_eval.{measurements, training}.*, vemi_eval.{suites, serving_sim}
                                              what a run measures and what trains the models
    5  vemi_eval.{variant_models, variant_builder}   the model spec, presets, model checks, provenance
    6  vemi_eval.{aggregate, replicates, run_results}  a run's records, status and results.json
    7  vemi_eval.runner                       orchestration of one suite
    8  vemi_eval.{results, history, registry, registry_listing}  reading results back, past runs, claims
    9  vemi_eval.{report, gate, gate_files, gate_ratios, gate_rules, sweep, experiments}.*,
       vemi_eval.{run_summary, recorded_run}  what reads results; a run with its report and history
   10  vemi_eval.cli.*                        the commands, one module each

Run ``python scripts/import_cycles.py``: it prints each cycle (a strongly connected group of modules)
and each upward import, and exits 1 on a cycle, on any upward import or on a module with no layer.
``tests/test_import_layers.py`` runs it.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("reference_model", "vemi_eval")

# Prefix -> layer; the longest matching prefix wins (``vemi_eval.report`` also covers its submodules).
LAYERS: dict[str, int] = {
    "reference_model": 0,
    **{
        f"vemi_eval.{m}": 1
        for m in (
            "errors",
            "records",
            "stats",
            "storage",
            "timing",
            "environment",
            "random_weights",
            "training_budget",
            "claim_context",
            "claim_verdicts",
            "rundir",  # a run directory's file names, partial file and exit codes
        )
    },
    "vemi_eval": 1,  # the package's own (empty) __init__
    "vemi_eval.data": 2,
    "vemi_eval.evaluators": 3,
    "vemi_eval.yardsticks": 3,
    "vemi_eval.measurements": 4,
    "vemi_eval.training": 4,
    "vemi_eval.suites": 4,
    "vemi_eval.serving_sim": 4,
    "vemi_eval.variant_models": 5,
    "vemi_eval.variant_builder": 5,
    "vemi_eval.aggregate": 6,
    "vemi_eval.replicates": 6,
    "vemi_eval.run_results": 6,
    "vemi_eval.runner": 7,
    "vemi_eval.results": 8,
    "vemi_eval.history": 8,
    "vemi_eval.registry": 8,
    "vemi_eval.registry_listing": 8,
    "vemi_eval.report": 9,
    "vemi_eval.gate": 9,
    "vemi_eval.gate_files": 9,
    "vemi_eval.gate_ratios": 9,
    "vemi_eval.gate_rules": 9,
    "vemi_eval.sweep": 9,
    "vemi_eval.experiments": 9,
    "vemi_eval.recorded_run": 9,  # a run with its report and its line in the history
    "vemi_eval.run_summary": 9,  # the console's summary of a run (reads the registry's claims)
    "vemi_eval.cli": 10,
}


@dataclass(frozen=True)
class Edge:
    """One import of one module by another, with where it is written."""

    source: str
    target: str
    where: str  # "path:line"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the two packages, by dotted name."""
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def _resolve(current: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name of a (possibly relative) ``from`` import's module."""
    if level == 0:
        return module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _own(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest known module that ``name`` is or lives in; None when outside the two packages."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def edges_of(name: str, path: Path, modules: dict[str, Path], root: Path = ROOT) -> list[Edge]:
    """Every import of a module of the two packages written in ``path``, inside functions too."""
    rel = path.relative_to(root).as_posix()
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node.level, node.module)
            # ``from pkg import sub`` imports the module ``pkg.sub`` when it is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            own = _own(t, modules)
            if own is not None and own != name:
                out.append(Edge(name, own, f"{rel}:{node.lineno}"))
    return out


def layer_of(name: str) -> int | None:
    best = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len, default=None)
    return None if best is None else LAYERS[best]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.append(m)
                    if m == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


@dataclass(frozen=True)
class Findings:
    cycles: list[list[str]]
    upward: list[str]  # "path:line: a (layer i) imports b (layer j)"
    upward_pairs: set[tuple[str, str]]  # (importer, imported) of each upward import
    unplaced: list[str]  # harness modules with no layer
    edges: list[Edge]


def check(root: Path = ROOT) -> Findings:
    modules = discover(root)
    edges = [e for name, path in modules.items() for e in edges_of(name, path, modules, root)]
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        graph[e.source].add(e.target)
    upward, pairs = set(), set()
    for e in edges:
        a, b = layer_of(e.source), layer_of(e.target)
        if a is not None and b is not None and b > a:
            upward.add(f"{e.where}: {e.source} (layer {a}) imports {e.target} (layer {b})")
            pairs.add((e.source, e.target))
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    return Findings(cycles(graph), sorted(upward), pairs, unplaced, edges)


def main() -> int:
    found = check()
    for group in found.cycles:
        inner = [e for e in found.edges if e.source in group and e.target in group]
        print(f"cycle of {len(group)} modules: {', '.join(group)}")
        for e in inner:
            print(f"    {e.where}: {e.source} -> {e.target}")
    for line in found.upward:
        print(f"upward: {line}")
    for m in found.unplaced:
        print(f"no layer: {m}")
    print(
        f"{len(found.cycles)} cycles, {len(found.upward)} upward imports, "
        f"{len(found.unplaced)} unplaced modules"
    )
    return 1 if found.cycles or found.upward or found.unplaced else 0


if __name__ == "__main__":
    sys.exit(main())

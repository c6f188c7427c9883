"""Data flows one way: no import cycle between the modules of the model and the harness, and no module
imports a higher layer (scripts/import_cycles.py holds the layer map), imports inside functions
included."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "scripts" / "import_cycles.py")
import_cycles = importlib.util.module_from_spec(_spec)
sys.modules["import_cycles"] = import_cycles  # dataclasses look their module up by name
_spec.loader.exec_module(import_cycles)


def test_no_import_cycle() -> None:
    found = import_cycles.check()
    assert not found.cycles, "import cycles:\n" + "\n".join(
        f"{', '.join(c)}:\n"
        + "\n".join(
            f"    {e.where}: {e.source} -> {e.target}" for e in found.edges if e.source in c and e.target in c
        )
        for c in found.cycles
    )


def test_no_module_imports_a_higher_layer() -> None:
    found = import_cycles.check()
    assert not found.unplaced, f"modules with no layer (add them to LAYERS): {found.unplaced}"
    assert not found.upward, "upward imports:\n" + "\n".join(found.upward)


def test_an_upward_import_added_to_the_harness_fails_the_check(tmp_path: Path) -> None:
    """The layer check on a copy of this tree with one upward import added, inside a function (the runner
    asking the report, a layer above it, for something) is found, with where it is written."""
    for pkg in import_cycles.PACKAGES:
        for src in (ROOT / pkg).rglob("*.py"):
            dest = tmp_path / src.relative_to(ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(src.read_text())
    assert not import_cycles.check(tmp_path).upward  # the copy is clean, as the tree is
    runner = tmp_path / "vemi_eval" / "runner.py"
    runner.write_text(runner.read_text() + "\n\ndef _report():\n    from .report import build_report\n")
    found = import_cycles.check(tmp_path)
    assert found.upward_pairs == {("vemi_eval.runner", "vemi_eval.report")}
    assert found.upward == [
        f"vemi_eval/runner.py:{len(runner.read_text().splitlines())}: vemi_eval.runner (layer 7) imports "
        "vemi_eval.report (layer 9)"
    ]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checker_catches_a_cycle_through_a_function_local_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "reference_model/__init__.py": "",
            "vemi_eval/__init__.py": "",
            "vemi_eval/stats.py": "def f():\n    from .records import x\n",
            "vemi_eval/records.py": "from .stats import f\n",
        },
    )
    assert import_cycles.check(root).cycles == [["vemi_eval.records", "vemi_eval.stats"]]


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "reference_model/__init__.py": "",
            "reference_model/report.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from vemi_eval.stats import x\n",
            "vemi_eval/__init__.py": "",
            "vemi_eval/stats.py": "x = 1\n",
            "vemi_eval/data/__init__.py": "def load():\n    from ..runner import run\n",
            "vemi_eval/runner.py": "from .data import load\nrun = load\n",
        },
    )
    found = import_cycles.check(root)
    assert found.upward_pairs == {
        ("reference_model.report", "vemi_eval.stats"),
        ("vemi_eval.data", "vemi_eval.runner"),
    }
    assert found.cycles == [["vemi_eval.data", "vemi_eval.runner"]]


def test_every_layer_prefix_names_a_module() -> None:
    modules = import_cycles.discover()
    stale = [p for p in import_cycles.LAYERS if not any(m == p or m.startswith(p + ".") for m in modules)]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"

"""The harness reaches the model through its public surface only: the package top level (build
function, specs, flag registry, errors), the typed report and the probes module. Any other import of
``reference_model`` internals from ``vemi_eval`` fails here, with the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import reference_model
from reference_model import enhancements

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_MODULES = {"reference_model", "reference_model.report", "reference_model.probes"}
# The flag registry is the enhancements package's own namespace (not its flag modules).
REGISTRY = "reference_model.enhancements"
REGISTRY_NAMES = {"FLAGS", "Flag", "FlagError", "FlagSpec", "available_flags", "parse_flags"}
# Trainers build, fit and save the model's own modules (codec, LM): model-side tools that live in the
# harness package for its data and CLI. They are outside this boundary, and said so here.
EXEMPT = ("vemi_eval/training/",)


def _violations(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith(EXEMPT):
        return []
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("reference_model") and alias.name not in ALLOWED_MODULES:
                    out.append(f"{rel}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mod = node.module
            if not mod.startswith("reference_model"):
                continue
            names = {a.name for a in node.names}
            if mod == REGISTRY and names <= REGISTRY_NAMES:
                continue
            if mod in ALLOWED_MODULES:
                if mod == "reference_model":
                    bad = sorted(n for n in names if n not in reference_model.__all__ + ["probes", "report"])
                    if bad:
                        out.append(f"{rel}:{node.lineno}: from reference_model import {', '.join(bad)}")
                continue
            out.append(f"{rel}:{node.lineno}: from {mod} import {', '.join(sorted(names))}")
    return out


def test_the_harness_imports_only_the_models_public_surface() -> None:
    files = sorted((ROOT / "vemi_eval").rglob("*.py"))
    assert files
    bad = [v for f in files for v in _violations(f)]
    assert not bad, "harness imports model internals:\n" + "\n".join(bad)


def test_the_checker_catches_an_internal_import(tmp_path: Path) -> None:
    fake = ROOT / "vemi_eval" / "_boundary_probe_tmp.py"
    fake.write_text("from reference_model.lm.transformer import attend\nimport reference_model.mod\n")
    try:
        assert len(_violations(fake)) == 2
    finally:
        fake.unlink()


def test_registry_names_exist() -> None:
    assert REGISTRY_NAMES <= set(dir(enhancements))

"""The enhancement registry as tables: `vemi-eval list flags` (every entry with its status and the suites
that measure it) and `vemi-eval list flags --json`; the registry itself is vemi_eval/registry.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .registry import ENHANCEMENTS, Enhancement, status


def suites_measuring(entry: Enhancement, suites: Mapping[str, Path] | None = None) -> list[str]:
    """Suites that run a variant with one of the entry's flags; else suites with one of its kinds."""
    from .suites import SuiteError, load_suite

    if suites is None:
        from .suites import available_suites

        suites = available_suites()
    with_flag, with_kind = [], []
    for name, path in sorted(suites.items()):
        try:
            s = load_suite(str(path), known_kinds=_AnyKind(), check_flags=False)
        except SuiteError:
            continue
        names = {f.partition("=")[0] for v in s.variants for f in v.flags}
        if names & set(entry.flags):
            with_flag.append(name)
        elif set(s.kinds) & set(entry.kinds):
            with_kind.append(name)
    return with_flag or with_kind


class _AnyKind(dict):
    """Accepts every kind name: listing suites must not import every measurement module."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> None:
        return None


def registry_table(flags: Mapping[str, Any] | None = None, with_suites: bool = True) -> list[dict[str, Any]]:
    """Every entry as a plain dict (what `vemi-eval list flags --json` prints)."""
    if flags is None:
        from reference_model.enhancements import available_flags

        flags = available_flags()
    rows = []
    for e in ENHANCEMENTS:
        d = asdict(e)
        d["claims"] = [{**asdict(c), "better": c.better, "threshold": c.threshold} for c in e.claims]
        d.update(status(e, flags))
        if with_suites:
            d["suites"] = suites_measuring(e)
        rows.append(d)
    return rows


def flag_table(flags: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every registered flag: name, stage, summary, default, group, conflicts, CUDA need, enhancement id."""
    if flags is None:
        from reference_model.enhancements import available_flags

        flags = available_flags()
    owner = {f: e.id for e in ENHANCEMENTS for f in e.flags}
    return [
        {
            "name": name,
            "enhancement": owner.get(name),
            "stage": spec.stage,
            "summary": spec.summary,
            "default": spec.default,
            "group": spec.group,
            "conflicts": sorted(spec.conflicts),
            "requires_cuda": spec.requires_cuda,
        }
        for name, spec in sorted(flags.items())
    ]

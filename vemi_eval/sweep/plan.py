"""The plan of a sweep: flag sets from --grid, a sweep file or the suite, x seeds x devices -> points."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    OptionsError,
    one_line,
)
from .sweepfile import is_sweep_file, read_sweep_file


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
    from ..measurements import load_all
    from ..suites import load_suite

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

"""The sweep file (TOML, data only): read and checked before any work; one line names what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import (
    OptionsError,
    SuiteError,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


DEVICES = ("cpu", "cuda")


def check_device(dev: str, where: str) -> str:
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
        out["devices"] = [check_device(d, where) for d in out["devices"]]

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

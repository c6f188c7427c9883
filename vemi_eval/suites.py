"""Suite files: declarative TOML (data only, nothing in a suite file runs code), validated before any work.

Schema (every table but [suite] is optional; unknown keys are errors)::

    [suite]
    name = "demo"                      # required
    description = "..."                # required, one line (shown by `vemi-eval list suites`)
    threads = 1                        # torch threads unless --threads says otherwise
    seed = 0                           # unless --seed

    [model]                            # what --preset/--config/--checkpoint/--device override
    lm = "tiny"                        # preset, config JSON path (relative to the suite file) or name
    codec = "tiny"
    lm_checkpoint = "..."              # optional safetensors paths
    codec_checkpoint = "..."
    dtype = "float32"                  # float32 | bfloat16 | float16
    device = "cpu"                     # cpu | cuda | cuda:N
    temp = 0.8                         # sampling (temp_text, top_k, top_k_text likewise)

    [[variants]]                       # the first one is the baseline; default: one variant, no flags
    name = "baseline"
    flags = []                         # list of "name[=value]" or one comma-separated string
    # a variant may also differ by model; what it leaves unset is the [model] above (with the command
    # line's overrides):
    preset = "moshi-2b"                # an LM preset (and the codec it goes with), or
    config = "student.json"            # a Moshi-format LM config JSON (relative to the suite file)
    lm_checkpoint = "a.safetensors"    # or "random", or a list: one checkpoint per training seed
    codec_checkpoint = "c.safetensors" # (replicates, measured each and pooled into the variant's records)
    dtype = "bfloat16"
    aa = true                          # an A/A control: the baseline's configuration again (the noise
                                       # floor); it declares no model fields and the baseline's flags

    [data]                             # handed to the quality measurements as ctx.data
    corpus = "espeak"                  # dir, path, corpus, split: strings; limit: an integer >= 1;
                                       # other keys are free (a kind of one's own reads them)

    [validity]                         # rules a measurement must meet or its records become INVALID
    min_frames = 50                    # records carrying extra["frames"] below this are INVALID
    min_duration_s = 4.0               # records carrying extra["duration_s"] below this are INVALID
    min_samples = 5                    # every ok record with n below this is INVALID; one taken given
                                       # an event (a latency given a take-over) is UNDERPOWERED: shown,
                                       # no verdict, the run stays VALID on its other records
    max_failed_share = 0.5             # a kind (on one variant) with more failed records is INVALID;
                                       # one that scored nothing (no ok record) always is

    [latency]                          # one table per measurement kind, in the order they run
    frames = 200                       # the kind's own parameters
    variants = ["baseline", "int8"]    # optional: run this kind on these variants only
    [latency.quick]                    # optional: overrides under --quick
    frames = 40
    variants = ["baseline"]            # (variants too: --quick may leave the slow ones out)

A measurement kind declares its parameters as a dict of defaults (``@measurement(params=...)``: its
``MeasurementSpec``); unknown keys and wrong types in its table are then rejected here, before any work.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import SuiteError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RESERVED_TABLES = ("suite", "model", "variants", "data", "validity", "experiment")  # see experiments/
KIND_KEYS = ("variants", "quick")  # keys of a measurement table the runner reads (the rest are params)
DTYPES = ("float32", "bfloat16", "float16")

_SUITE_KEYS = {"name": str, "description": str, "threads": int, "seed": int}
_MODEL_KEYS = {
    "lm": str,
    "codec": str,
    "lm_checkpoint": str,
    "codec_checkpoint": str,
    "dtype": str,
    "device": str,
    "temp": float,
    "temp_text": float,
    "top_k": int,
    "top_k_text": int,
}
_DATA_KEYS = {"dir": str, "path": str, "limit": int, "corpus": str, "split": str}  # typed; others free
_NON_NEGATIVE_MODEL_KEYS = ("temp", "temp_text", "top_k", "top_k_text")
_VARIANT_KEYS = {
    "name": str,
    "flags": (list, str),
    "description": str,
    "preset": str,
    "config": str,
    "lm_checkpoint": (list, str),
    "codec_checkpoint": (list, str),
    "dtype": str,
    "aa": bool,
}
VARIANT_MODEL_KEYS = ("preset", "config", "lm_checkpoint", "codec_checkpoint", "dtype")
_VALIDITY_KEYS = {"min_frames": int, "min_duration_s": float, "min_samples": int, "max_failed_share": float}


@dataclass(frozen=True)
class VariantDecl:
    """One [[variants]] table. The model fields are None / empty where the variant inherits [model]."""

    name: str
    flags: tuple[str, ...]
    description: str = ""
    preset: str | None = None
    config: str | None = None  # an LM config JSON, absolute
    lm_checkpoint: tuple[str, ...] = ()  # one per replicate (training seed); absolute paths or "random"
    codec_checkpoint: tuple[str, ...] = ()
    dtype: str | None = None
    aa: bool = False  # an A/A control: the baseline again, never attributed to an enhancement

    @property
    def own_model(self) -> bool:
        """Does the variant name a model of its own (else it runs the suite's [model])?"""
        return any(getattr(self, k) for k in VARIANT_MODEL_KEYS)

    @property
    def replicates(self) -> int:
        return max(len(self.lm_checkpoint), len(self.codec_checkpoint), 1)


@dataclass
class Suite:
    name: str
    description: str
    path: Path | None
    content: str  # the file's text, stored in results.json so a run can be redone exactly
    model: dict[str, Any]
    variants: list[VariantDecl]
    data: dict[str, Any]
    validity: dict[str, Any]
    kinds: dict[str, dict[str, Any]]  # kind -> its table, in file order
    threads: int | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()

    @property
    def baseline(self) -> VariantDecl:
        return self.variants[0]

    def params_for(self, kind: str, quick: bool) -> dict[str, Any]:
        """The kind's parameters (runner keys removed), with its [kind.quick] overrides under --quick."""
        return with_quick(self.kinds[kind], quick)

    def variants_for(self, kind: str, quick: bool = False) -> list[VariantDecl]:
        """The variants a kind runs on: its ``variants`` (under --quick, its quick table's if it names
        some), else every variant."""
        table = self.kinds[kind]
        names = (table.get("quick") or {}).get("variants") if quick else None
        names = names if names is not None else table.get("variants")
        if names is None:
            return list(self.variants)
        return [v for v in self.variants if v.name in names]


def with_quick(table: Mapping[str, Any], quick: bool) -> dict[str, Any]:
    """A kind's table without the runner's keys, its ``quick`` sub-table applied under --quick: the one
    place where quick overrides are merged."""
    params = {k: v for k, v in table.items() if k not in KIND_KEYS}
    if quick:
        params.update({k: v for k, v in (table.get("quick") or {}).items() if k not in KIND_KEYS})
    return params


# --- where suites live -----------------------------------------------------------------------------
def suite_dirs() -> list[Path]:
    """Search path for suite names: $VEMI_SUITES (os.pathsep-separated), ./suites, the repository's."""
    dirs: list[Path] = []
    env = os.environ.get("VEMI_SUITES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.cwd() / "suites")
    dirs.append(Path(__file__).resolve().parent.parent / "suites")
    seen: list[Path] = []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.append(r)
    return seen


def available_suites() -> dict[str, Path]:
    """Suite name (file stem) -> path; the first directory of the search path wins."""
    found: dict[str, Path] = {}
    for d in suite_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def resolve_suite_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or os.sep in name_or_path or p.is_file():
        if not p.is_file():
            raise SuiteError(f"suite file not found: {p}")
        return p
    suites = available_suites()
    # a suite's own name (its [suite] name, what reports show) spells with "-" what its file stem spells "_"
    name = name_or_path if name_or_path in suites else name_or_path.replace("-", "_")
    if name not in suites:
        known = ", ".join(sorted(suites)) or "none"
        raise SuiteError(f"unknown suite {name_or_path!r} (known suites: {known})")
    return suites[name]


# --- loading and validation ------------------------------------------------------------------------
def load_suite(
    name_or_path: str,
    *,
    known_kinds: Mapping[str, KindDeclaration | None],
    check_flags: bool = True,
) -> Suite:
    """Read and validate a suite; raise SuiteError (one line) or FlagError naming what is wrong.

    ``known_kinds`` maps measurement kind -> its spec (``vemi_eval.measurements.load_all()``: the caller
    passes it, so that suites never import the measurements that read them).
    """
    path = resolve_suite_path(name_or_path)
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"cannot read suite file {path}: {exc}") from None
    return parse_suite(content, path=path, known_kinds=known_kinds, check_flags=check_flags)


def parse_suite(
    content: str,
    *,
    path: Path | None = None,
    known_kinds: Mapping[str, KindDeclaration | None],
    check_flags: bool = True,
) -> Suite:
    where = str(path) if path else "<suite>"
    try:
        doc = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"invalid suite file {where}: {exc}") from None
    head = _table(doc, "suite", where, required=True)
    _check_keys(head, _SUITE_KEYS, f"{where}: [suite]")
    for req in ("name", "description"):
        if req not in head:
            raise SuiteError(f"{where}: [suite] needs a {req!r}")
    if "/" in head["name"] or "\\" in head["name"] or ".." in head["name"] or not head["name"].strip():
        raise SuiteError(
            f"{where}: [suite] name {head['name']!r} must be a plain name (no '/', '\\' or '..')"
        )
    model = _table(doc, "model", where)
    _check_keys(model, _MODEL_KEYS, f"{where}: [model]")
    for key in _NON_NEGATIVE_MODEL_KEYS:
        if key in model and model[key] < 0:
            raise SuiteError(f"{where}: [model] {key} must be >= 0, got {model[key]!r}")
    if "dtype" in model and model["dtype"] not in DTYPES:
        raise SuiteError(f"{where}: [model] dtype {model['dtype']!r} is not one of {', '.join(DTYPES)}")
    if path is not None:  # relative config/checkpoint paths are relative to the suite file
        for key in ("lm", "codec", "lm_checkpoint", "codec_checkpoint"):
            v = model.get(key)
            if isinstance(v, str) and (v.endswith((".json", ".safetensors")) or "/" in v):
                model[key] = str((path.parent / v).resolve()) if not Path(v).is_absolute() else v

    variants = _variants(doc.get("variants"), where, path)
    data = _table(doc, "data", where)
    _check_keys(data, {**_DATA_KEYS, **{k: object for k in data if k not in _DATA_KEYS}}, f"{where}: [data]")
    if "limit" in data and data["limit"] < 1:
        raise SuiteError(f"{where}: [data] limit must be >= 1, got {data['limit']!r}")
    for key in ("dir", "path"):  # a data directory named in the suite is relative to the suite file
        v = data.get(key)
        if isinstance(v, str) and path is not None and not Path(v).is_absolute():
            data[key] = str((path.parent / v).resolve())
    validity = _table(doc, "validity", where)
    _check_keys(validity, _VALIDITY_KEYS, f"{where}: [validity]")
    share = validity.get("max_failed_share")
    if share is not None and not 0 <= share <= 1:
        raise SuiteError(f"{where}: [validity] max_failed_share must be in [0, 1], got {share!r}")

    kinds: dict[str, dict[str, Any]] = {}
    for key, table in doc.items():
        if key in RESERVED_TABLES:
            continue
        if key not in known_kinds:
            known = ", ".join(sorted(known_kinds)) or "none registered"
            raise SuiteError(f"{where}: unknown measurement kind [{key}] (known kinds: {known})")
        if not isinstance(table, dict):
            raise SuiteError(f"{where}: [{key}] must be a table, got {type(table).__name__}")
        kinds[key] = _check_kind_table(key, table, variants, known_kinds[key], where)
    if not kinds:
        known = ", ".join(sorted(known_kinds)) or "none registered"
        raise SuiteError(f"{where}: the suite has no measurement table (known kinds: {known})")

    if check_flags:
        check_variant_flags(variants, where)
    return Suite(
        name=head["name"],
        description=head["description"],
        path=path,
        content=content,
        model=model,
        variants=variants,
        data=data,
        validity=validity,
        kinds=kinds,
        threads=head.get("threads"),
        seed=head.get("seed"),
    )


def check_variant_flags(variants: Iterable[VariantDecl], where: str = "<suite>") -> None:
    """Raise FlagError for an unknown flag, a bad value or a conflict (device needs are checked later)."""
    from reference_model.enhancements import FlagError, parse_flags

    for v in variants:
        try:
            parse_flags(list(v.flags), device="cuda")  # "cuda": a GPU-only flag is not an error here
        except FlagError as exc:
            raise FlagError(f"{where}: variant {v.name!r}: {exc}") from None


def _table(doc: Mapping[str, Any], key: str, where: str, required: bool = False) -> dict[str, Any]:
    if key not in doc:
        if required:
            raise SuiteError(f"{where}: missing [{key}] table")
        return {}
    t = doc[key]
    if not isinstance(t, dict):
        raise SuiteError(f"{where}: [{key}] must be a table, got {type(t).__name__}")
    return dict(t)


def _type_ok(value: Any, expected: type | tuple[type, ...]) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if object in types:  # a free key
        return True
    if isinstance(value, bool):  # TOML true/false must not pass as an int or a float
        return bool in types
    if float in types and isinstance(value, int):
        return True
    return isinstance(value, types)


def _type_name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    names = {list: "array", str: "string", int: "integer", float: "number", bool: "boolean", dict: "table"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _a(expected: type | tuple[type, ...]) -> str:
    name = _type_name(expected)
    return ("an " if name[0] in "aeiou" else "a ") + name


def _check_keys(table: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> None:
    for k, v in table.items():
        if k not in schema:
            raise SuiteError(f"{where}: unknown key {k!r} (known keys: {', '.join(schema)})")
        if not _type_ok(v, schema[k]):
            raise SuiteError(f"{where}: {k!r} must be {_a(schema[k])}, got {v!r}")


def _variants(raw: Any, where: str, path: Path | None = None) -> list[VariantDecl]:
    if raw is None:
        return [VariantDecl("baseline", ())]
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{where}: [[variants]] must be a non-empty array of tables")
    out: list[VariantDecl] = []
    for i, v in enumerate(raw):
        if not isinstance(v, dict):
            raise SuiteError(f"{where}: variant #{i + 1} must be a table")
        _check_keys(v, _VARIANT_KEYS, f"{where}: variant #{i + 1}")
        if "name" not in v or not v["name"].strip():
            raise SuiteError(f"{where}: variant #{i + 1} needs a 'name'")
        flags = v.get("flags", [])
        if isinstance(flags, str):
            flags = [f.strip() for f in flags.split(",") if f.strip()]
        if not all(isinstance(f, str) for f in flags):
            raise SuiteError(f"{where}: variant {v['name']!r}: flags must be strings")
        name = v["name"].strip()
        model = _variant_model(v, f"{where}: variant {name!r}", path)
        out.append(VariantDecl(name, tuple(flags), v.get("description", ""), aa=v.get("aa", False), **model))
    names = [v.name for v in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise SuiteError(f"{where}: two variants are named {dup!r}")
    return _check_aa(out, where)


def _variant_model(v: Mapping[str, Any], where: str, path: Path | None) -> dict[str, Any]:
    """A variant's own model fields, paths made absolute (relative to the suite file); checkpoints as
    tuples, one per replicate. Whether the files exist and load is the runner's check, before any work."""

    def resolve(p: str) -> str:
        if p == "random" or Path(p).is_absolute() or path is None:
            return p
        return str((path.parent / p).resolve())

    out: dict[str, Any] = {"preset": v.get("preset"), "dtype": v.get("dtype")}
    if out["dtype"] is not None and out["dtype"] not in DTYPES:
        raise SuiteError(f"{where}: dtype {out['dtype']!r} is not one of {', '.join(DTYPES)}")
    if "preset" in v and "config" in v:
        raise SuiteError(f"{where}: give a preset or a config, not both")
    out["config"] = resolve(v["config"]) if "config" in v else None
    for key in ("lm_checkpoint", "codec_checkpoint"):
        raw = v.get(key, [])
        paths = [raw] if isinstance(raw, str) else list(raw)
        if key in v and (not paths or not all(isinstance(p, str) and p.strip() for p in paths)):
            raise SuiteError(f"{where}: {key} must be a path or a non-empty list of paths, got {raw!r}")
        out[key] = tuple(resolve(p) for p in paths)
    n_lm, n_codec = len(out["lm_checkpoint"]), len(out["codec_checkpoint"])
    if n_lm > 1 and n_codec > 1 and n_lm != n_codec:
        raise SuiteError(
            f"{where}: {n_lm} LM and {n_codec} codec checkpoints: replicates pair them by position, so give "
            "as many of each (or one of either)"
        )
    return out


def _check_aa(variants: list[VariantDecl], where: str) -> list[VariantDecl]:
    """An A/A variant is the baseline's configuration again (its flags and its model, which the A/A
    variant takes from the baseline): anything else would not measure the noise floor."""
    base = variants[0]
    if base.aa:
        raise SuiteError(f"{where}: the baseline {base.name!r} cannot be its own A/A control (aa = true)")
    out = [base]
    for v in variants[1:]:
        if v.aa:
            if v.own_model:
                raise SuiteError(f"{where}: A/A variant {v.name!r} declares a model; it runs the baseline's")
            if sorted(v.flags) != sorted(base.flags):
                raise SuiteError(
                    f"{where}: A/A variant {v.name!r} has flags {list(v.flags)}, the baseline "
                    f"{list(base.flags)}: an A/A control runs the baseline's exact configuration"
                )
            model = {k: getattr(base, k) for k in VARIANT_MODEL_KEYS}
            v = VariantDecl(v.name, base.flags, v.description, aa=True, **model)
        out.append(v)
    return out


class KindDeclaration(Protocol):
    """What the loader reads of a measurement kind (vemi_eval.measurements.MeasurementSpec has it; the
    spec is passed in, never imported: measurements read suites, not the reverse)."""

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def check_params(self) -> Callable[[dict[str, Any]], None] | None: ...


def _check_kind_table(
    kind: str, table: dict[str, Any], variants: list[VariantDecl], spec: KindDeclaration | None, where: str
) -> dict[str, Any]:
    """The kind's table checked against its declaration (None: a kind listed, not loaded: unchecked)."""
    table = dict(table)
    quick = table.get("quick", {})
    if not isinstance(quick, dict):
        raise SuiteError(f"{where}: [{kind}.quick] must be a table")
    for label, names in ((kind, table.get("variants")), (f"{kind}.quick", quick.get("variants"))):
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
            raise SuiteError(f"{where}: [{label}] variants must be a non-empty array of variant names")
        known = [v.name for v in variants]
        for n in names:
            if n not in known:
                listed = ", ".join(known)
                raise SuiteError(f"{where}: [{label}] names variant {n!r}, not in [[variants]] ({listed})")
    quick = {k: v for k, v in quick.items() if k != "variants"}
    params = {k: v for k, v in table.items() if k not in KIND_KEYS}
    if spec is not None:
        declared = spec.params
        schema = {k: (type(d) if d is not None else object) for k, d in declared.items()}
        _check_params(params, schema, f"{where}: [{kind}]")
        _check_params(quick, schema, f"{where}: [{kind}.quick]")
        check = spec.check_params
        for under_quick in (False, True) if check is not None else ():
            try:
                check({**declared, **with_quick(table, under_quick)})
            except ValueError as exc:
                raise SuiteError(f"{where}: [{kind}{'.quick' if under_quick else ''}] {exc}") from None
    return table


def _check_params(params: Mapping[str, Any], schema: Mapping[str, type], where: str) -> None:
    for k, v in params.items():
        if k not in schema:
            raise SuiteError(f"{where}: unknown key {k!r} (known keys: {', '.join(schema)})")
        t = schema[k]
        if t is not object and not _type_ok(v, float if t is float else t):
            raise SuiteError(f"{where}: {k!r} must be {_a(t)}, got {v!r}")

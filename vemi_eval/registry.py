"""The eighteen enhancements of the Vemi document (seed-enhancements.md), each with its claims as numbers.

The entries are data: suites/claims/enhancements.toml (keyword fields; the file's header says them). Each
claim is the ratio variant / baseline that the document promises for one claim metric: "40-60% reduction
in generation time" is a time ratio in [0.40, 0.60]; "3-5x throughput" a throughput ratio in [3, 5]. "N%
faster" is read as time x (1 - N%), the reading that matches the document's own headline ("70-80% latency
reduction (from 200ms to 40-60ms)"). A claim is met when the measured ratio is at least as good as the
smallest improvement claimed (``threshold``): lower-is-better metrics need ratio <= hi, higher-is-better
ones ratio >= lo. With a confidence interval: "meets" when the whole interval is on the good side, "falls
short" when all of it is on the bad side, else "inconclusive".

Which records stand for a claim metric is declared by the measurement kinds themselves (``claims=`` of
``@measurement``), never by name lists here: a renamed metric is renamed where it is written.

Status is derived at run time from ``reference_model.enhancements.available_flags()``: an enhancement is
implemented when one of its flags is registered; the training-only ones say why they cannot be.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .claim_verdicts import ClaimBar, Evidence, interval_verdict, judge
from .errors import SuiteError
from .records import MEASURED

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CLAIMS_FILE = Path(__file__).resolve().parent.parent / "suites" / "claims" / "enhancements.toml"
DIRECTIONS = ("lower", "higher", "mixed")


@cache
def _directions() -> dict[str, str]:
    return _load()[1]


@dataclass(frozen=True)
class Claim:
    metric: str  # a claim metric (the file's [metrics])
    text: str  # the document's words
    lo: float | None  # claimed ratio variant / baseline, low end
    hi: float | None  # high end (lo == hi for a single number)
    compare: str = "ratio"  # "ratio": variant / baseline; "value": the record's own value (fidelity)
    flags: tuple[str, ...] = ()  # flags the claim is about (default: every flag of its enhancement)
    trained_weights: bool = False  # depends on a trained model's predictions: n/a on random weights

    @property
    def better(self) -> str:
        return _directions()[self.metric]

    @property
    def threshold(self) -> float | None:
        """The least improvement the document claims: the bar a measurement must clear."""
        return self.hi if self.better == "lower" else self.lo


@dataclass(frozen=True)
class FlagValues:
    """Which values of a flag are the enhancement; the others are what it is measured against.

    ``default`` is the value the model runs with when a variant does not set the flag (attn: sdpa).
    """

    flag: str
    values: tuple[str, ...]
    default: str | None = None


@dataclass(frozen=True)
class Proxy:
    """A measurement that stands in for an entry's claims: which records (their kinds; none: any) unless the
    variant or its baseline runs one of ``unless_flags`` ("name" or "name=value": then it is the real
    thing), and what it measured."""

    text: str
    kinds: tuple[str, ...] = ()
    unless_flags: tuple[str, ...] = ()

    def applies(self, kind: str, flags: Iterable[str]) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        names = set(flags) | {f.partition("=")[0] for f in flags}
        return not (set(self.unless_flags) & names)


@dataclass(frozen=True)
class Enhancement:
    id: str
    title: str
    section: str
    summary: str
    claims: tuple[Claim, ...]
    matrix_name: str | None  # name in the document's priority matrix, None when not in it
    impact: str  # the matrix's columns, or "not in matrix"
    effort: str
    priority: str
    phase: str  # the roadmap phase that lists it, or "not in roadmap"
    metrics: tuple[str, ...]  # what it should move (claim metrics)
    kinds: tuple[str, ...]  # measurement kinds that measure it
    device: str
    flags: tuple[str, ...]  # flag names that implement it (empty: cannot be built at inference time)
    not_implementable: str = ""  # why there is no flag (training-only, needs data we do not have...)
    notes: str = ""
    flag_values: tuple[FlagValues, ...] = ()  # flags of which only some values are the enhancement
    recipes: tuple[str, ...] = ()  # training recipe options that implement it (vemi_eval/training/recipes.py)
    proxies: tuple[Proxy, ...] = ()  # measurements that stand in for its claims


_ENTRY_KEYS = {
    "id", "title", "section", "summary", "matrix_name", "impact", "effort", "priority", "phase",
    "metrics", "kinds", "device", "flags", "not_implementable", "notes", "claim", "flag_values", "recipes",
    "proxy",
}  # fmt: skip
_CLAIM_KEYS = {"metric", "text", "low", "high", "compare", "flags", "trained_weights"}
_PROXY_KEYS = {"text", "kinds", "unless_flags"}
_FLAG_VALUE_KEYS = {"flag", "values", "default"}


def _keys(table: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def load_registry(path: Path = CLAIMS_FILE) -> tuple[tuple[Enhancement, ...], dict[str, str]]:
    """The entries and the claim metrics' directions of a claims file; SuiteError names what is wrong."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SuiteError(f"cannot read the enhancement registry {path}: {exc}") from None
    directions = dict(doc.get("metrics") or {})
    unknown_top = sorted(set(doc) - {"metrics", "enhancement", "matrix_order"})
    if unknown_top:
        raise SuiteError(f"{path}: unknown top-level key(s) {', '.join(unknown_top)}")
    for name, better in directions.items():
        if better not in DIRECTIONS:
            raise SuiteError(f"{path}: [metrics] {name} = {better!r} (one of {', '.join(DIRECTIONS)})")
    entries = []
    for i, e in enumerate(doc.get("enhancement") or []):
        where = f"{path}: enhancement #{i + 1} ({e.get('id', '?')})"
        _keys(e, _ENTRY_KEYS, where)
        claims = []
        for c in e.get("claim") or []:
            _keys(c, _CLAIM_KEYS, where + " claim")
            if c["metric"] not in directions:
                raise SuiteError(f"{where}: claim metric {c['metric']!r} is not in [metrics]")
            lo = c.get("low")
            claims.append(
                Claim(c["metric"], c["text"], lo, c.get("high", lo), c.get("compare", "ratio"),
                      tuple(c.get("flags", ())), bool(c.get("trained_weights", False)))
            )  # fmt: skip
        proxies = []
        for px in e.get("proxy") or []:
            _keys(px, _PROXY_KEYS, where + " proxy")
            proxies.append(Proxy(px["text"], tuple(px.get("kinds", ())), tuple(px.get("unless_flags", ()))))
        flag_values = []
        for fv in e.get("flag_values") or []:
            _keys(fv, _FLAG_VALUE_KEYS, where + " flag_values")
            flag_values.append(FlagValues(fv["flag"], tuple(fv["values"]), fv.get("default")))
        for m in e.get("metrics", ()):
            if m not in directions:
                raise SuiteError(f"{where}: metric {m!r} is not in [metrics]")
        entries.append(
            Enhancement(
                id=e["id"],
                title=e["title"],
                section=e["section"],
                summary=e["summary"],
                claims=tuple(claims),
                matrix_name=e.get("matrix_name"),
                impact=e["impact"],
                effort=e["effort"],
                priority=e["priority"],
                phase=e["phase"],
                metrics=tuple(e.get("metrics", ())),
                kinds=tuple(e.get("kinds", ())),
                device=e["device"],
                flags=tuple(e.get("flags", ())),
                not_implementable=e.get("not_implementable", ""),
                notes=e.get("notes", ""),
                flag_values=tuple(flag_values),
                recipes=tuple(e.get("recipes", ())),
                proxies=tuple(proxies),
            )
        )
    return tuple(entries), directions


@cache
def _load() -> tuple[tuple[Enhancement, ...], dict[str, str]]:
    return load_registry()


ENHANCEMENTS: tuple[Enhancement, ...] = _load()[0]
BY_ID = {e.id: e for e in ENHANCEMENTS}


def priority_order() -> list[str]:
    """Entry ids in the document's priority-matrix row order, then those it does not list (by id)."""
    doc = tomllib.loads(CLAIMS_FILE.read_text(encoding="utf-8"))
    listed = [i for i in doc.get("matrix_order", []) if i in BY_ID]
    return listed + [e.id for e in ENHANCEMENTS if e.id not in listed]


# --- status and listing -------------------------------------------------------------------------------
def status(entry: Enhancement, flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """ "implemented" when one of the entry's flags is registered in the model or one of its training
    recipe options is declared (vemi_eval/training/recipes.py), else why not."""
    if flags is None:
        from reference_model.enhancements import available_flags

        flags = available_flags()
    from .training.recipes import available_recipes

    recipes = available_recipes()
    have = [f for f in entry.flags if f in flags]
    missing = [f for f in entry.flags if f not in flags]
    have_recipes = [r for r in entry.recipes if r in recipes]
    if have or have_recipes:
        return {
            "status": "implemented", "flags_registered": have, "flags_missing": missing,
            "recipes_registered": have_recipes, "reason": "",
        }  # fmt: skip
    if entry.recipes:
        return {
            "status": "not implemented", "flags_registered": [], "flags_missing": missing,
            "recipes_registered": [],
            "reason": f"recipe option {', '.join(entry.recipes)} not declared in training/recipes.py",
        }  # fmt: skip
    if not entry.flags:
        return {
            "status": "not implemented",
            "flags_registered": [],
            "flags_missing": [],
            "recipes_registered": [],
            "reason": entry.not_implementable,
        }
    return {
        "status": "not implemented",
        "flags_registered": [],
        "flags_missing": missing,
        "recipes_registered": [],
        "reason": f"flag {', '.join(missing)} not registered in reference_model.enhancements",
    }


# --- the priority matrix, measured ------------------------------------------------------------------
def metric_table() -> dict[str, dict[str, Any]]:
    """Claim metric -> its direction and the (glob, condition) rules the measurement kinds declare for it."""
    from .measurements import claim_rules

    rules = claim_rules()
    return {
        name: {"better": better, "match": [(p, w) for p, w, _kind in rules.get(name, [])]}
        for name, better in _directions().items()
    }


def __getattr__(name: str) -> Any:
    if name == "METRICS":  # built on first use: it imports every measurement kind
        return metric_table()
    raise AttributeError(name)


def _matches(record: Mapping[str, Any], claim: Claim, table: Mapping[str, Any]) -> bool:
    """Does a record stand for the claim's metric (name glob and required condition values)?"""
    name, cond = record.get("metric", ""), record.get("condition") or {}
    for pattern, where in table[claim.metric]["match"]:
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        if all(k in cond and (v == "*" or cond[k] == v) for k, v in where.items()):
            return True
    return False


def verdict(claim: Claim, value: float | None, low: float | None, high: float | None) -> str:
    """meets / falls short / inconclusive for one measured ratio (or value) against a claim's bar, by its
    interval alone (``priority_matrix`` judges with everything else known: claim_verdicts.judge)."""
    if value is None or claim.threshold is None:
        return "not measured"
    if claim.better == "mixed":
        return "not comparable"
    return interval_verdict(ClaimBar(claim.threshold, claim.better), value, low, high)


def _variant_flags(results: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    """Variant name -> {flag name: value (None when written without one)}."""
    out = {}
    for v in results.get("variants", []):
        pairs = (f.partition("=") for f in v.get("flags", []))
        out[v["name"]] = {name.strip(): (value.strip() if eq else None) for name, eq, value in pairs}
    return out


_MODEL_FIELDS = ("lm", "codec", "lm_checkpoint", "codec_checkpoint", "dtype")


def _same_model(variant: Mapping[str, Any], baseline: Mapping[str, Any]) -> bool:
    """Do two variant records run one model (results of before per-variant models: always)?"""
    return all(variant.get(k) == baseline.get(k) for k in _MODEL_FIELDS)


def attributed(
    entry: Enhancement,
    claim: Claim,
    variant_flags: Mapping[str, str | None],
    baseline_flags: Mapping[str, str | None],
    variant_recipes: Iterable[str] = (),
    baseline_recipes: Iterable[str] = (),
    same_model: bool = True,
) -> bool:
    """Does a variant, measured against a baseline, stand for the entry's claim?

    By flags: it must use one of the claim's flags on the baseline's model; where the entry says which
    values of a flag are the enhancement (``flag_values``), its value must be one of them and differ from
    the baseline's (the flag's default when the baseline does not set it): attn=eager is the baseline of
    2.2, and attn=sdpa against a baseline that already runs sdpa measures nothing of it.
    By recipe: its checkpoints were trained with one of the entry's recipe options (``trained_with``) that
    the baseline's were not, and it runs the baseline's flags (the checkpoint is the only difference).
    """
    recipes = (set(entry.recipes) & set(variant_recipes)) - set(baseline_recipes)
    if recipes and dict(variant_flags) == dict(baseline_flags):
        return True
    used = set(claim.flags or entry.flags) & set(variant_flags)
    if not used or not same_model:
        return False
    for rule in entry.flag_values:
        if rule.flag not in used:
            continue
        value = variant_flags[rule.flag]
        if value not in rule.values or baseline_flags.get(rule.flag, rule.default) == value:
            return False
    return True


def runs_reference(
    entry: Enhancement,
    claim: Claim,
    variant_flags: Mapping[str, str | None],
    baseline_flags: Mapping[str, str | None],
) -> bool:
    """Does the variant differ from the baseline only by running the reference value of a flag the
    entry's ``flag_values`` name (attn=eager) where the baseline runs the enhancement (sdpa, the default)?
    Then the baseline stands for the claim, measured against the variant: its ratio is the inverse."""
    rules = [r for r in entry.flag_values if r.flag in set(claim.flags or entry.flags)]
    names = {r.flag for r in rules}
    if not rules or {k: x for k, x in variant_flags.items() if k not in names} != {
        k: x for k, x in baseline_flags.items() if k not in names
    }:
        return False
    differs = False
    for r in rules:
        mine, theirs = variant_flags.get(r.flag, r.default), baseline_flags.get(r.flag, r.default)
        if mine == theirs:
            continue
        if mine in r.values or theirs not in r.values:
            return False
        differs = True
    return differs


def priority_matrix(
    results: Iterable[Mapping[str, Any]], flags: Mapping[str, Any] | None = None
) -> list[dict]:
    """One row per enhancement: the document's impact/effort/priority and claims beside what the runs
    measured (every record of a variant ``attributed`` to the entry whose metric matches a claim). Each
    claim's measurements are judged one by one (vemi_eval/claim_verdicts.py) and grouped into ``rows``,
    one per context (vemi_eval/claim_context.py): values measured in different contexts are never pooled
    into one verdict."""
    results = list(results)
    table = metric_table()
    rows = []
    for e in ENHANCEMENTS:
        row = {
            "id": e.id,
            "title": e.title,
            "matrix_name": e.matrix_name,
            "impact": e.impact,
            "effort": e.effort,
            "priority": e.priority,
            "phase": e.phase,
            **status(e, flags),
            "claims": [],
        }
        for c in e.claims:
            measured = [m for res in results for m in _claim_measurements(e, c, res, table)]
            by_context = _context_rows(measured)
            row["claims"].append(
                {
                    "metric": c.metric,
                    "text": c.text,
                    "claimed_low": c.lo,
                    "claimed_high": c.hi,
                    "compare": c.compare,
                    "better": c.better,
                    "threshold": c.threshold,
                    "measurements": measured,
                    "rows": by_context,
                    "verdict": _claim_verdict(by_context),
                }
            )
        rows.append(row)
    return rows


def _claim_measurements(
    e: Enhancement, c: Claim, res: Mapping[str, Any], table: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The records of one run that stand for one claim, each judged on its own."""
    from .claim_context import context_of

    vflags = _variant_flags(res)
    facts = {v["name"]: v for v in res.get("variants", [])}
    base = next((v["name"] for v in res.get("variants", []) if v.get("is_baseline")), None)
    own = _records_by_variant(res)
    aa = next((v["name"] for v in res.get("variants", []) if v.get("aa")), None)
    out = []
    for m in res.get("metrics", []):
        if m.get("status") not in MEASURED or not _matches(m, c, table):
            continue
        v, b = facts.get(m.get("variant"), {}), facts.get(base, {})
        if m.get("variant") == base or v.get("aa"):  # an A/A control measures noise only
            continue
        recipes = (v.get("trained_with") or (), b.get("trained_with") or ())
        flags_vb = (vflags.get(m.get("variant"), {}), vflags.get(base, {}))
        same = _same_model(v, b)
        inverted = False
        if not attributed(e, c, *flags_vb, *recipes, same_model=same):
            # the variant runs the reference (attn=eager) against a baseline that runs the
            # enhancement (sdpa): the claim's ratio is baseline / variant
            inverted = c.compare == "ratio" and same and runs_reference(e, c, *flags_vb)
            if not inverted:
                continue
        if c.compare == "value":
            val, lo, hi = m.get("value"), m.get("ci_low"), m.get("ci_high")
        else:
            val, lo, hi = m.get("ratio_to_baseline"), m.get("ratio_ci_low"), m.get("ratio_ci_high")
        if inverted and val:
            val, lo, hi = 1 / val, (1 / hi if hi else None), (1 / lo if lo else None)
        if val is None:
            continue
        by_recipe = bool(set(e.recipes) & set(recipes[0]))
        context = context_of(res, str(m.get("variant")), e.recipes if by_recipe else ())
        key = (m.get("metric"), _cond_key(m))
        mde, basis = _mde(c, m, own.get(base, {}).get(key), own.get(aa, {}).get(key) if aa else None)
        run_flags = [f for f in (v.get("flags") or []) + (b.get("flags") or [])]
        proxy = next((p.text for p in e.proxies if p.applies(str(m.get("kind") or ""), run_flags)), None)
        evidence = Evidence(
            value=float(val),
            ci_low=lo,
            ci_high=hi,
            run_status=str(res.get("status") or "VALID"),
            run_reasons=tuple(res.get("invalid_reasons") or ()),
            record_status=str(m.get("status")),
            record_reason=str(m.get("reason") or ""),
            exact=_deterministic(m),
            random_weights=v.get("weights") == "random",
            needs_trained_weights=c.trained_weights,
            proxy=proxy,
            mde=mde,
            mde_basis=basis,
            training_side=by_recipe,
            control_converged=context.control_converged,
            control_budget_recorded=context.control_budget_recorded,
        )
        judged = judge(ClaimBar(c.threshold, c.better), evidence)
        out.append(
            {
                "run": res.get("_path") or res.get("suite", {}).get("name"),
                "suite": m.get("suite"),
                "variant": m.get("variant"),
                "metric": m.get("metric"),
                "kind": m.get("kind"),
                "condition": m.get("condition", {}),
                "measured": val,
                "ci_low": lo,
                "ci_high": hi,
                "status": m.get("status"),
                "inverted": inverted,
                "verdict": judged.text,
                "verdict_kind": judged.kind,
                "mde": mde,
                "mde_basis": basis,
                "context": context.to_dict(),
            }
        )
    return out


def _cond_key(m: Mapping[str, Any]) -> str:
    import json

    return json.dumps(m.get("condition") or {}, sort_keys=True, default=str)


def _records_by_variant(res: Mapping[str, Any]) -> dict[str, dict[tuple[Any, str], Mapping[str, Any]]]:
    out: dict[str, dict[tuple[Any, str], Mapping[str, Any]]] = {}
    for m in res.get("metrics", []):
        out.setdefault(str(m.get("variant")), {})[(m.get("metric"), _cond_key(m))] = m
    return out


def _deterministic(m: Mapping[str, Any]) -> bool:
    from .measurements import is_exact

    kind = str(m.get("kind") or "")
    return bool(kind) and bool(is_exact(kind, str(m.get("metric", ""))))


def _mde(
    c: Claim, m: Mapping[str, Any], base: Mapping[str, Any] | None, aa: Mapping[str, Any] | None
) -> tuple[float | None, str]:
    """The comparison's minimum detectable effect and what it is read from (claim_verdicts)."""
    from .claim_verdicts import mde_from_aa, mde_from_seeds, seed_values

    if c.compare != "ratio":
        return None, ""
    seeds = seed_values(m)
    if len(seeds) >= 2 and base is not None:
        mde = mde_from_seeds(seeds, seed_values(base) or [float(base.get("value") or 0.0)])
        if mde is not None:
            return mde, f"{len(seeds)} seeds"
    if aa is not None and not _deterministic(m):
        mde = mde_from_aa(aa.get("ratio_to_baseline"), aa.get("ratio_ci_low"), aa.get("ratio_ci_high"))
        if mde is not None:
            return mde, "A/A control"
    return None, ""


def _context_rows(measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The claim's measurements, one row per context (in the order first measured)."""
    from .claim_verdicts import overall

    groups: dict[str, list[dict[str, Any]]] = {}
    for m in measured:
        groups.setdefault(m["context"]["label"], []).append(m)
    rows = []
    for label, ms in groups.items():
        verdict_kind = overall([m["verdict_kind"] for m in ms])
        reasons = list(dict.fromkeys(m["verdict"] for m in ms if m["verdict_kind"] == verdict_kind))
        why = reasons[0].partition(": ")[2] if len(reasons) == 1 else ""
        mdes = [m["mde"] for m in ms if m.get("mde") is not None]
        rows.append(
            {
                "context": label,
                "context_detail": ms[0]["context"],
                "measurements": ms,
                "verdict": f"{verdict_kind}: {why}" if why else verdict_kind,
                "verdict_kind": verdict_kind,
                "mde": max(mdes) if mdes else None,
                "runs": list(dict.fromkeys(str(m["run"]) for m in ms)),
            }
        )
    return rows


def _claim_verdict(rows: list[dict[str, Any]]) -> str:
    """The claim's verdict where it has one context; several contexts keep their own ("by context")."""
    if not rows:
        return "not measured"
    return rows[0]["verdict"] if len(rows) == 1 else "by context"

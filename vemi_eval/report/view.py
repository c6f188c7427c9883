"""What the report shows, as plain data for the templates (templates/report.html.j2): every value is text
or a number here and the template escapes it; no markup is built in Python.

Sections: header (status and reasons of every run), summary, one section per suite (every metric in a
table, variants against the baseline as a forest plot, metric-vs-condition plots, latency distributions),
failures and skips, environment. The lead (the priority matrix, claims beside measured effects) is
matrix_view.py's.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import numpy as np

from ..records import MEASURED
from . import plots

FLOAT_FMT = "{:.4g}"


def fmt_value(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if unit == "bytes":
        return plots.human_bytes(float(v))
    return FLOAT_FMT.format(v)


def fmt_unit(unit: str) -> str:
    return "" if unit in ("bytes", "") else f" {unit}"


def cond_label(cond: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(cond.items()))


def is_numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def as_number(v: Any) -> float | None:
    """A condition value as a number: 10, 10.0 and "10" alike (the dialogue kind writes its SNR ladder
    as text beside "clean"); None for a label such as "clean"."""
    if is_numeric(v):
        return float(v)
    if isinstance(v, str):
        try:
            x = float(v)
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


# --- cells ------------------------------------------------------------------------------------------
def cell(m: dict[str, Any] | None, base: Any = None) -> dict[str, Any] | None:
    """One record as a table cell: value [CI] and, under it, x ratio to the baseline [CI] of ``base``, the
    baseline value the ratio was taken against (an interleaved twin's where the ratio was paired)."""
    if m is None:
        return None
    status = m.get("status", "ok")
    unit = m.get("unit", "")
    out: dict[str, Any] = {"status": status, "reason": m.get("reason") or "", "n": m.get("n")}
    if status in ("failed", "skipped") or m.get("value") is None:
        return {**out, "failed": True}
    lo, hi = m.get("ci_low"), m.get("ci_high")
    out.update(
        failed=False,
        value=fmt_value(m.get("value"), unit),
        unit=fmt_unit(unit),
        ci=f"{fmt_value(lo, unit)}, {fmt_value(hi, unit)}" if lo is not None else "",
        ratio="",
        ratio_class="",
    )
    r = m.get("ratio_to_baseline")
    if r is not None:
        rlo, rhi = m.get("ratio_ci_low"), m.get("ratio_ci_high")
        rci = f" [{rlo:.3g}, {rhi:.3g}]" if rlo is not None and rhi is not None else ""
        of = f" of {fmt_value(base, unit)}{fmt_unit(unit)}" if base is not None else ""
        out["ratio"] = f"{r:.3g}{rci}{of}"
        out["ratio_class"] = ratio_class(r, rlo, rhi, m.get("higher_is_better"))
    return out


def ratio_class(r: float, lo: float | None, hi: float | None, higher_is_better: bool | None) -> str:
    """better / worse when the interval (or, without one, the ratio) is on one side of 1."""
    if higher_is_better is None or r <= 0:
        return ""
    if lo is not None and hi is not None:
        a, b = lo, hi
    else:  # no interval: colour only a change of more than 1%
        a = b = r if abs(math.log(r)) > math.log(1.01) else 1.0
    if a > 1.0 or b < 1.0:
        improved = (a > 1.0) == bool(higher_is_better)
        return "better" if improved else "worse"
    return ""


def figure(uri: str, caption: str) -> dict[str, str]:
    return {"uri": uri, "caption": caption}


# --- sections ---------------------------------------------------------------------------------------
def header(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for run in runs:
        doc = run["doc"]
        reasons = list(doc.get("invalid_reasons") or [])
        reasons += [
            f"error: {e}" if isinstance(e, str) else f"error: {json.dumps(e)}"
            for e in doc.get("errors") or []
        ]
        reasons += [f"missing: {m}" for m in doc.get("missing") or []]
        skipped = doc.get("skipped_inputs") or []
        if skipped:
            names = sorted({s.get("input", "") for s in skipped})
            listed = ", ".join(names)
            reasons.append(f"{len(names)} input(s) skipped (listed under failures and skips): {listed}")
        variants = ", ".join(
            f"{v['name']}{' (baseline)' if v.get('is_baseline') else ''}: "
            f"{' '.join(v.get('flags') or []) or 'no flags'}"
            for v in doc.get("variants", [])
        )
        out.append(
            {
                "label": run["label"],
                "status": doc.get("status", "INCOMPLETE"),
                "suite": (doc.get("suite") or {}).get("name"),
                "model": doc.get("model") or {},
                "seed": doc.get("seed"),
                "threads": doc.get("threads"),
                "quick": bool(doc.get("quick")),
                "started": doc.get("started"),
                "finished": doc.get("finished"),
                "reasons": reasons,
                "variants": variants,
            }
        )
    return out


HEADLINE = (
    ("frame_time_p50_ms", {"stage": "total"}),
    ("frame_time_p99_ms", {"stage": "total"}),
    ("deadline_miss_share", {}),
    ("end_to_end_p99_ms", {}),
    ("max_realtime_streams", {}),
    ("realtime_frames_per_second", {}),
    ("weight_bytes", {"component": "total"}),
    ("peak_rss_increase_bytes", {}),
    ("peak_cuda_allocated_increase_bytes", {}),
)
STATUSES = ("ok", "invalid", "underpowered", "failed", "skipped")


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per run and variant: record counts by status and the headline metrics present."""
    present = [
        (name, cond)
        for name, cond in HEADLINE
        if any(m["metric"] == name and m.get("condition", {}) == cond for run in runs for m in run["metrics"])
    ]
    header_row = ["run", "variant", *STATUSES] + [f"{n} {cond_label(c)}".strip() for n, c in present]
    from ..run_summary import baseline_value

    rows = []
    for run in runs:
        baselines = _baselines(run)
        for v in run["variants"]:
            ms = [m for m in run["metrics"] if m["variant"] == v]
            counts: dict[str, int] = defaultdict(int)
            for m in ms:
                counts[m.get("status", "ok")] += 1
            hits = [
                next((m for m in ms if m["metric"] == name and m.get("condition", {}) == cond), None)
                for name, cond in present
            ]
            rows.append(
                {
                    "label": run["label"],
                    "variant": v,
                    "counts": [counts[s] for s in STATUSES],
                    "cells": [None if h is None else cell(h, baseline_value(h, baselines)) for h in hits],
                }
            )
    return {"header": header_row, "rows": rows}


def _baselines(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's baseline records by "metric|condition" (run_summary.baseline_value reads them)."""
    base = run["variants"][0] if run["variants"] else ""
    return {f"{m['metric']}|{_ckey(m)}": m for m in run["metrics"] if m["variant"] == base}


def _ckey(m: dict[str, Any]) -> str:
    return json.dumps(m.get("condition") or {}, sort_keys=True, default=str)


def suite_table(suite: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every metric of one suite: a row per (metric, condition), a column per (run, variant)."""
    from ..run_summary import baseline_value

    columns = [(run["label"], v) for run in runs for v in run["variants"]]
    multi = len(runs) > 1
    cells: dict[tuple, dict[tuple, dict]] = defaultdict(dict)
    bases: dict[tuple, Any] = {}
    order: list[tuple] = []
    for run in runs:
        baselines = _baselines(run)
        for m in run["metrics"]:
            bases[(run["label"], m["variant"], m["metric"], _ckey(m))] = baseline_value(m, baselines)
            key = (m["metric"], json.dumps(m.get("condition", {}), sort_keys=True, default=str))
            if key not in cells:
                order.append(key)
            cells[key][(run["label"], m["variant"])] = m
    order.sort(key=lambda k: (k[0], _cond_sort_key(json.loads(k[1]))))
    rows = []
    for key in order:
        ms = cells[key]
        any_m = next(iter(ms.values()))
        hib = any_m.get("higher_is_better")
        rows.append(
            {
                "metric": key[0],
                "arrow": "" if hib is None else (" (higher better)" if hib else " (lower better)"),
                "condition": cond_label(json.loads(key[1])),
                "unit": any_m.get("unit", ""),
                "cells": [cell(ms.get(c), bases.get((*c, key[0], key[1]))) for c in columns],
            }
        )
    return {
        "name": suite,
        "anchor": f"suite-{suite}",
        "header": ["metric", "condition", "unit"] + [f"{r}: {v}" if multi else v for r, v in columns],
        "rows": rows,
    }


def _clean(cond: dict[str, Any]) -> bool:
    """No noise or reverberation on the user channel (the dialogue and lm_heldout kinds' clean rows)."""
    return "rt60_s" not in cond and all(cond.get(k, "clean") == "clean" for k in ("snr_db", "user_channel"))


def by_voice_table(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Answer accuracy per held-out user voice (the records whose ``extra`` holds ``by_voice``), clean
    user channel only: a row per voice, a column per (run, variant, metric). A pooled accuracy hides the
    few voices a model does not generalise to; this shows them. None when no record has one."""
    return _by_group_table(runs, "by_voice", "user voice", low_below=0.5)


def by_engine_table(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The same per speech engine of the held-out users (``by_engine``: espeak-ng, festival): the LM
    issue's target is 0.80 on the held-out voices of each engine, so a cell below it is marked."""
    return _by_group_table(runs, "by_engine", "user engine", low_below=0.8)


def _by_group_table(
    runs: list[dict[str, Any]], field: str, heading: str, low_below: float
) -> dict[str, Any] | None:
    multi = len(runs) > 1
    columns: list[tuple[str, dict[str, dict[str, int]]]] = []
    for run in runs:
        for m in run["metrics"]:
            by = (m.get("extra") or {}).get(field)
            cond = m.get("condition") or {}
            if not isinstance(by, dict) or not _clean(cond):
                continue
            label = f"{m['variant']}: {m['metric']}"
            columns.append((f"{run['label']}: {label}" if multi else label, by))
    if not columns:
        return None
    voices = sorted({v for _, by in columns for v in by})
    rows = []
    for v in voices:
        cells = []
        for _, by in columns:
            t = by.get(v)
            if not t:
                cells.append({"text": "-", "low": False})
                continue
            n = int(t.get("turns", t.get("words", 0)))
            acc = t["correct"] / n if n else None
            cells.append(
                {
                    "text": "-" if acc is None else f"{acc:.2f} ({t['correct']}/{n})",
                    "low": acc is not None and acc < low_below,
                }
            )
        rows.append({"voice": v, "cells": cells})
    return {"header": [heading] + [c for c, _ in columns], "rows": rows, "low_below": low_below}


def _cond_sort_key(cond: dict[str, Any]) -> tuple:
    """Numbers (and numeric text) in numeric order, then labels: SNR 5, 10, 20, clean."""

    def one(v: Any) -> tuple:
        x = as_number(v)
        return (0, x, "") if x is not None else (1, 0.0, str(v))

    return tuple((k, one(v)) for k, v in sorted(cond.items()))


def problems(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for run in runs:
        for m in run["metrics"]:
            if m.get("status", "ok") != "ok":
                cond = cond_label(m.get("condition", {}))
                rows.append([run["label"], m["variant"], m["metric"], cond, m["status"], m.get("reason", "")])
        for e in run["doc"].get("errors") or []:
            rows.append([run["label"], "", "", "", "error", e if isinstance(e, str) else json.dumps(e)])
        for miss in run["doc"].get("missing") or []:
            rows.append([run["label"], "", miss, "", "missing", "not measured (run interrupted or crashed)"])
        for s in run["doc"].get("skipped_inputs") or []:
            where = f"{s.get('kind', '')} input {s.get('input', '')}"
            rows.append([run["label"], s.get("variant", ""), where, "", "skipped input", s.get("reason", "")])
    return rows


def environment(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for run in runs:
        doc = run["doc"]
        env = dict(doc.get("environment") or {})
        packages = env.pop("packages", {}) or {}
        rows = [[k, str(doc.get(k))] for k in ("seed", "threads", "quick", "started", "finished")]
        rows += [[f"model {k}", str(v)] for k, v in (doc.get("model") or {}).items()]
        rows += [[k, json.dumps(v) if isinstance(v, dict | list) else str(v)] for k, v in env.items()]
        rows += [[f"package {k}", str(v)] for k, v in sorted(packages.items())]
        rows += [[f"evaluator {k}", json.dumps(v)] for k, v in sorted((doc.get("evaluators") or {}).items())]
        rows += [[f"data {k}", str(v)] for k, v in sorted(run["data_hashes"].items())]
        suite = doc.get("suite") or {}
        rows += [["suite file", f"{suite.get('path')} (sha256 {suite.get('sha256')})"]]
        out.append({"label": run["label"], "rows": rows, "suite_content": suite.get("content") or ""})
    return out


# --- figures ----------------------------------------------------------------------------------------
def forest_figures(suite: str, runs: list[dict[str, Any]], max_rows: int = 14) -> list[tuple[str, str]]:
    """One forest plot per (run, variant): every record with a ratio and no numeric condition sweep
    (sweeps get their own line plots), the largest effects first when there are more than ``max_rows``
    (a figure per variant keeps the labels short and legible however many variants a suite has)."""
    out = []
    for run in runs:
        by_variant: dict[str, list[dict[str, Any]]] = {}
        for m in run["metrics"]:
            r = m.get("ratio_to_baseline")
            if r is None or r <= 0 or m.get("status") not in MEASURED:
                continue
            cond = m.get("condition", {})
            if any(as_number(v) is not None for v in cond.values()):
                continue
            lo, hi = m.get("ratio_ci_low"), m.get("ratio_ci_high")
            if lo is not None and (lo <= 0 or hi is None or hi <= 0):
                lo = hi = None
            by_variant.setdefault(m["variant"], []).append(
                {
                    "label": f"{m['metric']} {cond_label(cond)}".strip(),
                    "ratio": r,
                    "lo": lo,
                    "hi": hi,
                    "higher_is_better": m.get("higher_is_better"),
                    "series": m["variant"],
                }
            )
        for variant, rows in by_variant.items():
            title = f"{suite}: {variant} / baseline"
            caption = f"{run['label']}: {variant} against the baseline ({len(rows)} ratios, log scale)"
            out.append((plots.forest(rows, title, max_per_panel=max_rows, width=6.4), caption))
    return out


def sweep_figures(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """For each metric with a numeric condition key: metric vs that key, one line per (run, variant,
    categorical condition values, other numeric keys)."""
    groups: dict[tuple[str, str], list[tuple[dict, dict, str]]] = defaultdict(list)
    for run in runs:
        for m in run["metrics"]:
            if m.get("value") is None:
                continue
            for key in m.get("condition") or {}:
                groups[(m["metric"], key)].append((m, run, run["label"]))
    out = []
    multi = len(runs) > 1
    for (metric, key), items in sorted(groups.items()):
        if not any(as_number(m["condition"][key]) is not None for m, _, _ in items):
            continue  # a label key (stage, source): no axis
        lines: dict[str, dict[str, list]] = {}
        unit = items[0][0].get("unit", "")
        for m, _run, label in items:
            others = {k: v for k, v in m["condition"].items() if k != key}
            name = f"{label}: {m['variant']}" if multi else m["variant"]
            if others:
                name += f" ({cond_label(others)})"
            line = lines.setdefault(name, {"label": name, "x": [], "y": [], "lo": [], "hi": [], "refs": []})
            x = as_number(m["condition"][key])
            if x is None:  # a labelled point of the same ladder ("clean"): a reference line beside it
                line["refs"].append((float(m["value"]), f"{key}={m['condition'][key]}"))
                continue
            line["x"].append(x)
            line["y"].append(float(m["value"]))
            line["lo"].append(m.get("ci_low"))
            line["hi"].append(m.get("ci_high"))
        if max(len(set(line["x"])) + len(line["refs"]) for line in lines.values()) < 2:
            continue  # one point per line: nothing to plot against
        lines = {k: v for k, v in lines.items() if v["x"]}
        xs = [x for line in lines.values() for x in line["x"]]
        if not xs:
            continue
        log_x = key in ("batch_size", "context") and min(xs) > 0 and max(xs) / min(xs) >= 8
        hline = None
        budget = items[0][0].get("budget_ms")
        if unit == "ms" and budget and "frame_time" in metric:
            hline = (float(budget), "frame budget")
        uri = plots.sweep(list(lines.values()), x_key=key, metric=metric, unit=unit, log_x=log_x, hline=hline)
        out.append((uri, f"{metric} against {key}"))
    return out


STAGES = ("encode", "lm", "decode", "total")


def latency_figures(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Histograms/CDFs of the measured frames of the latency kind, and frame time along the conversation."""
    dist: dict[str, dict[str, np.ndarray]] = {}
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    budget = 80.0
    multi = len(runs) > 1
    for run in runs:
        frame = run["samples"]
        if frame is None or "kind" not in frame or "phase" not in frame or "total_ms" not in frame:
            continue
        lat = frame[frame["kind"] == "latency"]
        for b in run["budgets"]:
            budget = b
        for variant, g in lat.groupby("variant", sort=False):
            label = f"{run['label']}: {variant}" if multi else str(variant)
            measured = g[g["phase"] == "measured"]
            dist[label] = {
                s: measured[f"{s}_ms"].dropna().to_numpy(float) for s in STAGES if f"{s}_ms" in measured
            }
            series[label] = (
                g["frame"].to_numpy(float),
                g["total_ms"].to_numpy(float),
                (g["phase"] == "measured").to_numpy(bool),
            )
    if not dist:
        return []
    return [
        (plots.latency_distribution(dist, budget, STAGES), "frame time per stage: histogram and CDF"),
        (plots.frame_series(series, budget), "total frame time along the conversation"),
    ]


def banners(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run that is not VALID, said first and in red: its status and every reason (header's list)."""
    return [
        {"label": h["label"], "status": h["status"], "reasons": h["reasons"]}
        for h in header(runs)
        if h["status"] != "VALID"
    ]


def headlines(runs: list[dict[str, Any]], matrix_rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Per run and variant, its headline figures (vemi_eval/run_summary.py: the ones the command line
    ends with), as table rows; and the headline metrics' plots against their conditions (accuracy
    against SNR, quality against the number of codebooks)."""
    from ..run_summary import headline_records

    rows = []
    multi = len(runs) > 1
    for run in runs:
        for h in headline_records(run["doc"], matrix_rows or [], per_variant=5):
            m = h.record
            c = cell(m, h.base) or {}
            rows.append(
                {
                    "variant": f"{run['label']}: {h.variant}" if multi else h.variant,
                    "figure": h.label,
                    "condition": cond_label(m.get("condition") or {}),
                    "cell": c,
                    "verdict": h.verdict,
                }
            )
    metrics = {h.record["metric"] for run in runs for h in headline_records(run["doc"], [], per_variant=5)}
    plotted = [{**run, "metrics": [m for m in run["metrics"] if m["metric"] in metrics]} for run in runs]
    return {"rows": rows, "figures": [figure(u, c) for u, c in sweep_figures(plotted)]}


def interval_text(lo: float | None, hi: float | None) -> str:
    return f"[{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else "(no interval)"


def _paired(m: dict[str, Any]) -> bool:
    return bool((m.get("extra") or {}).get("paired_baseline"))


def noise_floor(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per comparison run: the A/A variant's ratio to the baseline per metric (the baseline measured
    against itself: its interval should contain 1; a change of a variant inside it is noise)."""
    out = []
    for run in runs:
        doc = run["doc"]
        variants = doc.get("variants", [])
        if len(variants) < 2:
            continue  # one variant: nothing is compared
        aa = [v["name"] for v in variants if v.get("aa")]
        rows = []
        for m in run["metrics"]:
            if m["variant"] not in aa or m.get("ratio_to_baseline") is None:
                continue
            lo, hi = m.get("ratio_ci_low"), m.get("ratio_ci_high")
            contains = None if lo is None or hi is None else lo <= 1.0 <= hi
            rows.append(
                {
                    "variant": m["variant"],
                    "metric": m["metric"],
                    "condition": cond_label(m.get("condition", {})),
                    "ratio": f"{m['ratio_to_baseline']:.4g}",
                    "exact": m["ratio_to_baseline"] == 1.0,
                    "ci": interval_text(lo, hi),
                    "width": f"±{(hi - lo) / 2:.3g}" if lo is not None and hi is not None else "",
                    "contains": {True: "yes", False: "NO", None: "no interval"}[contains],
                    # timed side by side with the baseline (ABBA blocks) or in sequence after it
                    "order": "side by side" if _paired(m) else "in sequence",
                    "cls": "" if contains is not False else "verdict-falls",
                }
            )
        rows.sort(key=lambda x: (x["contains"] != "NO", x["metric"], x["condition"]))
        failed = sum(1 for x in rows if x["contains"] == "NO")
        # single values (no interval): exact ones (bytes, counts, token agreement) equal 1 or do not
        single = [x for x in rows if x["contains"] == "no interval"]
        names = {id(x): f"{x['metric']} {x['condition']}".strip() for x in single}
        exact = [names[id(x)] for x in single if x["exact"]]
        moved = [f"{names[id(x)]}: x{x['ratio']}" for x in single if not x["exact"]]
        rows = [x for x in rows if x["contains"] != "no interval"]
        out.append({"label": run["label"], "aa": aa, "rows": rows, "failed": failed, "exact": exact,
                    "moved": moved})  # fmt: skip
    return out

"""The report's lead, as plain data for the templates: the priority matrix as these runs measured it
(each claim with its measured ratio and interval, its verdict and the A/A noise floor of the same metric;
one figure per enhancement) and the enhancements they did not measure, each with why.
"""

from __future__ import annotations

import json
from typing import Any

from . import plots
from .view import cond_label, figure, header, interval_text


# --- the lead: the priority matrix, measured ------------------------------------------------------
def implemented_by(row: dict[str, Any]) -> list[str]:
    """What implements an enhancement (registry.status): its flags registered in the model and its recipe
    options declared for training; either one makes it implemented, so both are named."""
    return [*(row.get("flags_registered") or []), *(row.get("recipes_registered") or [])]


def _verdict_class(verdict: str) -> str:
    return "verdict-" + (verdict.split()[0] if verdict else "not")


def _aa_index(runs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(results path, metric, condition) -> the A/A variant's record there."""
    out = {}
    for run in runs:
        doc = run["doc"]
        aa = {v["name"] for v in doc.get("variants", []) if v.get("aa")}
        for m in run["metrics"]:
            if m["variant"] in aa and m.get("ratio_to_baseline") is not None:
                key = (doc.get("_path", ""), m["metric"], json.dumps(m.get("condition", {}), sort_keys=True))
                out[key] = m
    return out


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _floor(rec: dict[str, Any] | None, inverted: bool) -> dict[str, Any] | None:
    """The A/A record of a measurement's metric as the measurement reads it (inverted with it)."""
    if rec is None:
        return None
    r, lo, hi = rec.get("ratio_to_baseline"), rec.get("ratio_ci_low"), rec.get("ratio_ci_high")
    if inverted and r:
        r, lo, hi = 1 / r, (1 / hi if hi else None), (1 / lo if lo else None)
    if lo is None or hi is None:
        return {"text": f"x{r:.3g}", "lo": None, "hi": None, "exceeded": False}
    return {"text": interval_text(lo, hi), "lo": lo, "hi": hi, "exceeded": not lo <= 1.0 <= hi}


def _why_not_measured(entry: Any, claim: Any, runs: list[dict[str, Any]]) -> str:
    """Why an implemented enhancement's claim has no measurement in these runs, from what they hold."""
    wanted = set(claim.flags or entry.flags)
    reasons = []
    for run in runs:
        doc = run["doc"]
        for v in doc.get("variants", []):
            names = {f.partition("=")[0] for f in v.get("flags", [])}
            if v.get("is_baseline") or v.get("aa") or not names & wanted:
                continue
            mine = [m for m in run["metrics"] if m["variant"] == v["name"]]
            skipped = [m for m in mine if m.get("status") == "skipped" and m.get("reason")]
            if not mine:
                quick = " (the suite's --quick tables leave it out)" if doc.get("quick") else ""
                reasons.append(f"{v['name']}: no measurement kind ran on it in this run{quick}")
            elif len(skipped) == len(mine):
                reasons.append(f"{v['name']}: skipped: {skipped[0]['reason']}")
            else:
                reasons.append(f"{v['name']}: none of its records stands for {claim.metric}")
    if reasons:
        return "; ".join(dict.fromkeys(reasons))
    if entry.recipes and not wanted:
        return (
            f"needs a variant with checkpoints trained with {', '.join(entry.recipes)} "
            "(trained_with in their sidecars) beside a baseline trained without"
        )
    return f"no variant of these runs sets {', '.join(sorted(wanted))}"


def matrix_lead(
    rows: list[dict[str, Any]], order: list[str], runs: list[dict[str, Any]], max_shown: int = 12
) -> dict[str, Any]:
    """The report's first section: the enhancements these runs measured, in the document's priority
    order, each claim with its measured ratio and interval, its verdict, the A/A noise floor of the same
    metric, and one figure per enhancement (claimed range against measured intervals); the enhancements
    they did not measure as one list, each with why."""
    from .. import registry

    aa = _aa_index(runs)
    by_id = {r["id"]: r for r in rows}
    overview, blocks, unmeasured = [], [], []
    for rank, eid in enumerate((i for i in order if i in by_id), start=1):
        r, entry = by_id[eid], registry.BY_ID[eid]
        claims, plotted = [], []
        entry_rows: list[dict[str, Any]] = []  # its overview rows: the first spans them all
        for c, decl in zip(r.get("claims", []), entry.claims, strict=True):
            ms = c.get("measurements", [])
            shown = []
            for m in ms:
                key = (m.get("run") or "", m["metric"], json.dumps(m.get("condition", {}), sort_keys=True))
                floor = _floor(aa.get(key), bool(m.get("inverted"))) if c.get("compare") == "ratio" else None
                label = f"{m['variant']}: {m['metric']} {cond_label(m.get('condition', {}))}".strip()
                shown.append(
                    {
                        "what": label + (" (baseline / variant)" if m.get("inverted") else ""),
                        "short": ("1/ " if m.get("inverted") else "") + label,
                        "value": f"{m['measured']:.3g}",
                        "ci": interval_text(m.get("ci_low"), m.get("ci_high")),
                        "verdict": m["verdict"],
                        "noise": floor["text"] if floor else "",
                        "noise_exceeded": bool(floor and floor["exceeded"]),
                        "aa": floor,
                    }
                )
            claimed = ""
            if c.get("claimed_low") is not None:
                lo, hi = c["claimed_low"], c.get("claimed_high")
                claimed = f"{lo:.3g}" + (f"-{hi:.3g}" if hi is not None and hi != lo else "")
            why = ""
            if not ms and r.get("status") == "implemented":
                why = _why_not_measured(entry, decl, runs)
            # one row per context (device, dtype, model, weights, budget): never one verdict across them
            contexts = c.get("rows") or [{"context": "", "measurements": [], "verdict": c.get("verdict", "")}]
            for ctx in contexts:
                mine = [s for s, m in zip(shown, ms, strict=True) if m in ctx["measurements"]]
                verdict = ctx["verdict"]
                item = {
                    "text": c.get("text", ""),
                    "metric": c.get("metric", ""),
                    "better": c.get("better", ""),
                    "compare": c.get("compare", "ratio"),
                    "claimed": claimed,
                    "context": ctx["context"],
                    "mde": "" if ctx.get("mde") is None else f"{ctx['mde']:.0%}",
                    "verdict": verdict,
                    "verdict_class": _verdict_class(verdict),
                    "measured": mine[:max_shown],
                    "more": max(0, len(mine) - max_shown),
                    "first": mine[0] if mine else None,
                    "why": why,
                    "drift": any(x["noise_exceeded"] for x in mine),  # an A/A interval excludes 1
                }
                claims.append(item)
                entry_rows.append({"rank": rank, "id": eid, "title": r.get("title"),
                                   "priority": r.get("priority"), "status": r.get("status"),
                                   "reason": r.get("reason") or "", "first_claim": not entry_rows,
                                   **item})  # fmt: skip
            plotted.append(
                {
                    "text": c.get("text", ""),
                    "lo": c.get("claimed_low"),
                    "hi": c.get("claimed_high"),
                    "threshold": c.get("threshold"),
                    "compare": c.get("compare", "ratio"),
                    "better": c.get("better", ""),
                    "measurements": [
                        {
                            "label": _shorten(s["short"], 64),
                            "value": m["measured"],
                            "lo": m.get("ci_low"),
                            "hi": m.get("ci_high"),
                            "verdict": m["verdict"],
                            "aa_lo": (s["aa"] or {}).get("lo"),
                            "aa_hi": (s["aa"] or {}).get("hi"),
                        }
                        for s, m in zip(shown[:12], ms[:12], strict=True)
                    ],
                }
            )
        entry_rows[0]["span"] = len(entry_rows)
        if not any(x["first"] for x in entry_rows):  # nothing of it measured: one line, with why
            whys = list(dict.fromkeys(x["why"] for x in entry_rows if x["why"]))
            why = "; ".join(whys) or r.get("reason") or r.get("status", "")
            unmeasured.append({"rank": rank, "id": eid, "title": r.get("title"), "why": why})
            continue
        overview += entry_rows
        figure_uri = None
        plotted = [p for p in plotted if p["measurements"]]  # the table says which are not measured
        if plotted:
            figure_uri = plots.claim_ranges(plotted, f"{eid} {r.get('title')}: claimed against measured")
        if r.get("status") != "implemented":  # the overview says why; nothing was measured
            continue
        blocks.append(
            {
                "rank": rank,
                "id": eid,
                "anchor": f"enh-{eid}",
                "title": r.get("title"),
                "matrix_name": r.get("matrix_name") or "",
                "impact": r.get("impact"),
                "effort": r.get("effort"),
                "priority": r.get("priority"),
                "status": r.get("status", ""),
                "flags": ", ".join(implemented_by(r)),
                "reason": r.get("reason") or "",
                "claims": claims,
                "figure": figure(figure_uri, f"{eid}: claimed range against every measured interval")
                if figure_uri
                else None,
            }
        )
    sources = [
        f"{h['label']} ({h['status']}, suite {h['suite']}, lm {h['model'].get('lm')}, device "
        f"{h['model'].get('device')}{', quick' if h['quick'] else ''})"
        for h in header(runs)
    ]
    total = len({o["id"] for o in overview}) + len(unmeasured)
    return {"overview": overview, "blocks": blocks, "sources": sources, "unmeasured": unmeasured,
            "total": total}  # fmt: skip

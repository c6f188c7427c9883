"""The report page: one self-contained HTML file (inline CSS, PNG figures as data URIs, no script).

Sections: header (status and reasons of every run), summary, the priority matrix (claims beside measured
effects), one section per suite (every metric in a table, variants against the baseline as a forest plot,
metric-vs-condition plots, latency distributions), failures and skips, environment.
"""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from typing import Any

import numpy as np

from . import plots

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;
 background:#fafafa;font-size:14px;line-height:1.4}
main{max-width:1280px;margin:0 auto;padding:16px 24px 64px}
h1{font-size:22px;margin:8px 0}
h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff;font-size:12.5px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f3;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;color:#fff;font-size:13px}
.VALID{background:#2a7d2a}.INVALID{background:#b8322a}.INCOMPLETE{background:#b07300}
.st-invalid{background:#fdecea}.st-failed{background:#f7d4d0}.st-skipped{background:#eeeeee;color:#666}
.ratio{font-size:11px;color:#444}.ci{color:#777;font-size:11px}
.better{color:#2a7d2a;font-weight:600}.worse{color:#b8322a;font-weight:600}.small{font-size:12px;color:#555}
.verdict-meets{background:#e3f3e3}.verdict-falls{background:#fdecea}.verdict-inconclusive{background:#fff6dd}
.verdict-not{color:#777}
img{max-width:100%;border:1px solid #e3e3e3;background:#fff;margin:4px 0}
.figs{display:flex;flex-wrap:wrap;gap:8px}.figs figure{margin:0;flex:0 1 620px}
.figs figure.wide{flex:1 1 100%}
figcaption{font-size:12px;color:#555}
details{margin:6px 0}summary{cursor:pointer;color:#333}
pre{background:#f4f4f6;padding:8px;overflow-x:auto;font-size:12px}
nav a{margin-right:12px}
"""

FLOAT_FMT = "{:.4g}"


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


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


class Page:
    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self.toc: list[tuple[str, str]] = []

    def add(self, s: str) -> None:
        self.parts.append(s)

    def h2(self, text: str, anchor: str) -> None:
        self.toc.append((anchor, text))
        self.add(f'<h2 id="{esc(anchor)}">{esc(text)}</h2>')

    def table(self, header: list[str], rows: list[list[str]], raw: bool = False) -> None:
        """rows hold HTML (already escaped) when raw, else plain text."""
        out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in header), "</tr></thead><tbody>"]
        for row in rows:
            out.append("<tr>")
            for cell in row:
                out.append(
                    cell if raw and cell.startswith("<td") else f"<td>{cell if raw else esc(cell)}</td>"
                )
            out.append("</tr>")
        out.append("</tbody></table>")
        self.add("".join(out))

    def figure(self, uri: str, caption: str, wide: bool = False) -> str:
        cls = ' class="wide"' if wide else ""
        img = f'<img alt="{esc(caption)}" src="{uri}">'
        return f"<figure{cls}>{img}<figcaption>{esc(caption)}</figcaption></figure>"

    def render(self) -> str:
        nav = " ".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in self.toc)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title>"
            f"<style>{CSS}</style></head><body><main><h1>{esc(self.title)}</h1><nav>{nav}</nav>"
            + "\n".join(self.parts)
            + "</main></body></html>\n"
        )


# --- cells ------------------------------------------------------------------------------------------


def value_cell(m: dict[str, Any]) -> str:
    status = m.get("status", "ok")
    unit = m.get("unit", "")
    tip = esc(m.get("reason") or "")
    if status in ("failed", "skipped"):
        return f'<td class="st-{status}" title="{tip}">{esc(status)}: {esc(m.get("reason", ""))}</td>'
    v = fmt_value(m.get("value"), unit) + esc(fmt_unit(unit))
    lo, hi = m.get("ci_low"), m.get("ci_high")
    ci = f' <span class="ci">[{fmt_value(lo, unit)}, {fmt_value(hi, unit)}]</span>' if lo is not None else ""
    ratio = ""
    r = m.get("ratio_to_baseline")
    if r is not None:
        rlo, rhi = m.get("ratio_ci_low"), m.get("ratio_ci_high")
        cls = ratio_class(r, rlo, rhi, m.get("higher_is_better"))
        rci = f" [{rlo:.3g}, {rhi:.3g}]" if rlo is not None and rhi is not None else ""
        ratio = f'<br><span class="ratio {cls}">x{r:.3g}{rci}</span>'
    cls = ' class="num st-invalid"' if status == "invalid" else ' class="num"'
    mark = " (invalid)" if status == "invalid" else ""
    return f'<td{cls} title="n={m.get("n")} {tip}">{v}{ci}{esc(mark)}{ratio}</td>'


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


# --- sections ---------------------------------------------------------------------------------------


def header(page: Page, runs: list[dict[str, Any]]) -> None:
    page.h2("Runs", "runs")
    for run in runs:
        doc = run["doc"]
        status = doc.get("status", "INCOMPLETE")
        model = doc.get("model", {})
        page.add(
            f'<h3><span class="badge {esc(status)}">{esc(status)}</span> {esc(run["label"])} '
            f'<span class="small">suite <b>{esc(doc.get("suite", {}).get("name"))}</b>, '
            f"lm {esc(model.get('lm'))}, codec {esc(model.get('codec'))}, device {esc(model.get('device'))}, "
            f"dtype {esc(model.get('dtype'))}, seed {esc(doc.get('seed'))}, threads {esc(doc.get('threads'))}"
            f"{', quick' if doc.get('quick') else ''}; "
            f"{esc(doc.get('started'))} to {esc(doc.get('finished'))}"
            "</span></h3>"
        )
        reasons = list(doc.get("invalid_reasons") or [])
        reasons += [
            f"error: {e}" if isinstance(e, str) else f"error: {json.dumps(e)}"
            for e in doc.get("errors") or []
        ]
        reasons += [f"missing: {m}" for m in doc.get("missing") or []]
        if reasons:
            page.add("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>")
        variants = ", ".join(
            f"{v['name']}{' (baseline)' if v.get('is_baseline') else ''}: "
            f"{' '.join(v.get('flags') or []) or 'no flags'}"
            for v in doc.get("variants", [])
        )
        page.add(f'<p class="small">variants: {esc(variants)}</p>')


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


def summary(page: Page, runs: list[dict[str, Any]]) -> None:
    """Per run and variant: record counts by status and the headline metrics present."""
    page.h2("Summary", "summary")
    present = [
        (name, cond)
        for name, cond in HEADLINE
        if any(m["metric"] == name and m.get("condition", {}) == cond for run in runs for m in run["metrics"])
    ]
    header_row = ["run", "variant", "ok", "invalid", "failed", "skipped"]
    header_row += [f"{n} {cond_label(c)}".strip() for n, c in present]
    rows = []
    for run in runs:
        for v in run["variants"]:
            ms = [m for m in run["metrics"] if m["variant"] == v]
            counts = defaultdict(int)
            for m in ms:
                counts[m.get("status", "ok")] += 1
            row = [f"<td>{esc(run['label'])}</td>", f"<td>{esc(v)}</td>"]
            row += [f'<td class="num">{counts[s]}</td>' for s in ("ok", "invalid", "failed", "skipped")]
            for name, cond in present:
                hit = next((m for m in ms if m["metric"] == name and m.get("condition", {}) == cond), None)
                row.append(value_cell(hit) if hit else "<td>-</td>")
            rows.append(row)
    page.table(header_row, rows, raw=True)
    page.add(
        '<p class="small">Cells: value [95% CI]; under it, x ratio to the run\'s baseline [CI]: '
        '<span class="better">green</span> better, <span class="worse">red</span> worse '
        "(interval clear of 1; without an interval, a change over 1%).</p>"
    )


def matrix(page: Page, rows: list[dict[str, Any]] | None, why_missing: str) -> None:
    page.h2("Enhancements: claims against measurements (empirical priority matrix)", "matrix")
    if rows is None:
        page.add(f"<p>{esc(why_missing)}</p>")
        return
    out = []
    for r in rows:
        claims = r.get("claims") or [{}]
        for i, c in enumerate(claims):
            ms = c.get("measurements", [])
            measured = "<br>".join(
                f"{esc(m['variant'])} {esc(m['metric'])} {esc(cond_label(m.get('condition', {})))}: "
                f"x{m['measured']:.3g}"
                + (f" [{m['ci_low']:.3g}, {m['ci_high']:.3g}]" if m.get("ci_low") is not None else "")
                + f" <i>{esc(m['verdict'])}</i>"
                for m in ms[:8]
            )
            if len(ms) > 8:
                measured += f"<br>... {len(ms) - 8} more"
            verdict = c.get("verdict", "")
            vcls = "verdict-" + (verdict.split()[0] if verdict else "not")
            claimed = ""
            if c.get("claimed_low") is not None:
                lo, hi = c["claimed_low"], c.get("claimed_high")
                claimed = f"{lo:.3g}" + (f"-{hi:.3g}" if hi is not None and hi != lo else "")
            first = i == 0
            span = f' rowspan="{len(claims)}"' if first and len(claims) > 1 else ""
            row = []
            if first:
                status = r.get("status", "")
                reason = f"<br><span class='small'>{esc(r.get('reason'))}</span>" if r.get("reason") else ""
                flags = ", ".join(r.get("flags_registered") or [])
                row += [
                    f"<td{span}><b>{esc(r.get('title'))}</b><br>"
                    f"<span class='small'>{esc(r.get('matrix_name') or '')}"
                    f"</span></td>",
                    f"<td{span}>{esc(r.get('impact'))} / {esc(r.get('effort'))} / "
                    f"{esc(r.get('priority'))}</td>",
                    f"<td{span}>{esc(status)}{' (' + esc(flags) + ')' if flags else ''}{reason}</td>",
                ]
            row += [
                f"<td>{esc(c.get('text', ''))}</td>",
                f"<td>{esc(c.get('metric', ''))} ({esc(c.get('better', ''))})</td>",
                f'<td class="num">{esc(claimed)}</td>',
                f"<td>{measured or '-'}</td>",
                f'<td class="{esc(vcls)}">{esc(verdict)}</td>',
            ]
            out.append(row)
    page.table(
        [
            "enhancement",
            "impact / effort / priority (document)",
            "status",
            "claim",
            "metric",
            "claimed ratio",
            "measured ratio",
            "verdict",
        ],
        out,
        raw=True,
    )


def suite_section(page: Page, suite: str, runs: list[dict[str, Any]], sections: dict[str, Any]) -> None:
    """Every metric of one suite (columns: run/variant), forest plot, sweeps, latency distributions."""
    page.h2(f"Suite: {suite}", f"suite-{suite}")
    columns = [(run["label"], v) for run in runs for v in run["variants"]]
    multi = len(runs) > 1
    cells: dict[tuple, dict[tuple, dict]] = defaultdict(dict)
    order: list[tuple] = []
    for run in runs:
        for m in run["metrics"]:
            key = (m["metric"], json.dumps(m.get("condition", {}), sort_keys=True, default=str))
            if key not in cells:
                order.append(key)
            cells[key][(run["label"], m["variant"])] = m
    order.sort(key=lambda k: (k[0], _cond_sort_key(json.loads(k[1]))))
    header_row = ["metric", "condition", "unit"] + [f"{r}: {v}" if multi else v for r, v in columns]
    rows = []
    for key in order:
        ms = cells[key]
        any_m = next(iter(ms.values()))
        hib = any_m.get("higher_is_better")
        arrow = "" if hib is None else (" (higher better)" if hib else " (lower better)")
        row = [
            f"<td>{esc(key[0])}<span class='small'>{esc(arrow)}</span></td>",
            f"<td>{esc(cond_label(json.loads(key[1])))}</td>",
            f"<td>{esc(any_m.get('unit', ''))}</td>",
        ]
        row += [value_cell(ms[c]) if c in ms else "<td>-</td>" for c in columns]
        rows.append(row)
    page.add(f"<details open><summary>All {len(order)} metrics of {esc(suite)}</summary>")
    page.table(header_row, rows, raw=True)
    page.add("</details>")
    figs = sections.get("forest", [])
    for uri, caption in figs:
        page.add(f'<div class="figs">{page.figure(uri, caption, wide=True)}</div>')
    if sections.get("latency"):
        page.add("<h3>Latency distributions (measured frames, from samples.csv)</h3>")
        page.add(
            '<div class="figs">'
            + "".join(page.figure(u, c, wide=True) for u, c in sections["latency"])
            + "</div>"
        )
    if sections.get("sweeps"):
        page.add("<h3>Metrics against their conditions</h3>")
        page.add('<div class="figs">' + "".join(page.figure(u, c) for u, c in sections["sweeps"]) + "</div>")


def _cond_sort_key(cond: dict[str, Any]) -> tuple:
    return tuple((k, (0, v, "") if is_numeric(v) else (1, 0, str(v))) for k, v in sorted(cond.items()))


def problems(page: Page, runs: list[dict[str, Any]]) -> None:
    page.h2("Failures, skips and invalid records", "problems")
    rows = []
    for run in runs:
        for m in run["metrics"]:
            if m.get("status", "ok") != "ok":
                rows.append(
                    [
                        run["label"],
                        m["variant"],
                        m["metric"],
                        cond_label(m.get("condition", {})),
                        m["status"],
                        m.get("reason", ""),
                    ]
                )
        for e in run["doc"].get("errors") or []:
            rows.append([run["label"], "", "", "", "error", e if isinstance(e, str) else json.dumps(e)])
        for miss in run["doc"].get("missing") or []:
            rows.append([run["label"], "", miss, "", "missing", "not measured (run interrupted or crashed)"])
    if rows:
        page.table(["run", "variant", "metric", "condition", "status", "reason"], rows)
    else:
        page.add("<p>None: every record of every run is ok.</p>")


def environment(page: Page, runs: list[dict[str, Any]]) -> None:
    page.h2("Environment", "environment")
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
        page.add(f"<h3>{esc(run['label'])}</h3>")
        page.table(["key", "value"], rows)
        if suite.get("content"):
            page.add(f"<details><summary>suite file</summary><pre>{esc(suite['content'])}</pre></details>")


# --- figures ----------------------------------------------------------------------------------------


def forest_figures(suite: str, runs: list[dict[str, Any]], max_rows: int = 40) -> list[tuple[str, str]]:
    """One forest plot per run of the suite: every record with a ratio and no numeric condition sweep
    (sweeps get their own line plots), largest effects first when there are too many."""
    out = []
    for run in runs:
        rows = []
        for m in run["metrics"]:
            r = m.get("ratio_to_baseline")
            if r is None or r <= 0 or m.get("status") not in ("ok", "invalid"):
                continue
            cond = m.get("condition", {})
            if any(is_numeric(v) for v in cond.values()):
                continue
            lo, hi = m.get("ratio_ci_low"), m.get("ratio_ci_high")
            if lo is not None and (lo <= 0 or hi is None or hi <= 0):
                lo = hi = None
            label = f"{m['metric']} {cond_label(cond)}".strip()
            rows.append(
                {
                    "label": label,
                    "ratio": r,
                    "lo": lo,
                    "hi": hi,
                    "higher_is_better": m.get("higher_is_better"),
                    "series": m["variant"],
                }
            )
        if not rows:
            continue
        if len({r["series"] for r in rows}) > 1:
            for r in rows:
                r["label"] = f"{r['label']} | {r['series']}"
        if len(rows) > max_rows:
            rows.sort(key=lambda x: -abs(math.log(x["ratio"])))
            rows = rows[:max_rows]
        rows.sort(key=lambda x: (x["label"], x["series"]))
        caption = f"{run['label']}: variants against the baseline ({len(rows)} ratios, log scale)"
        out.append((plots.forest(rows, f"{suite}: variant / baseline"), caption))
    return out


def sweep_figures(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """For each metric with a numeric condition key: metric vs that key, one line per (run, variant,
    categorical condition values, other numeric keys)."""
    groups: dict[tuple[str, str], list[tuple[dict, dict, str]]] = defaultdict(list)
    for run in runs:
        for m in run["metrics"]:
            if m.get("value") is None:
                continue
            for key, val in (m.get("condition") or {}).items():
                if is_numeric(val):
                    groups[(m["metric"], key)].append((m, run, run["label"]))
    out = []
    multi = len(runs) > 1
    for (metric, key), items in sorted(groups.items()):
        lines: dict[str, dict[str, list]] = {}
        unit = items[0][0].get("unit", "")
        for m, _run, label in items:
            others = {k: v for k, v in m["condition"].items() if k != key}
            name = f"{label}: {m['variant']}" if multi else m["variant"]
            if others:
                name += f" ({cond_label(others)})"
            line = lines.setdefault(name, {"label": name, "x": [], "y": [], "lo": [], "hi": []})
            line["x"].append(float(m["condition"][key]))
            line["y"].append(float(m["value"]))
            line["lo"].append(m.get("ci_low"))
            line["hi"].append(m.get("ci_high"))
        if max(len(set(line["x"])) for line in lines.values()) < 2:
            continue  # one point per line: nothing to plot against
        xs = [x for line in lines.values() for x in line["x"]]
        log_x = key in ("batch_size", "context") and min(xs) > 0 and max(xs) / min(xs) >= 8
        hline = None
        budget = items[0][0].get("extra", {}).get("budget_ms")
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

"""Figures of the report, each returned as a ``data:image/png;base64,...`` URI (the page embeds them).

Matplotlib with the Agg backend only: nothing is shown, nothing is fetched, fonts are matplotlib's own.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
GOOD, BAD, NEUTRAL = "#2a7d2a", "#b8322a", "#666666"
RATIO_TICKS = (
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.25,
    0.33,
    0.5,
    0.67,
    0.8,
    1,
    1.25,
    1.5,
    2,
    3,
    4,
    5,
    10,
    20,
    50,
    100,
)


def to_data_uri(fig: Any, dpi: int = 96) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def color_of(i: int) -> str:
    return COLORS[i % len(COLORS)]


LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")


def style_of(i: int) -> dict[str, str]:
    """Colour, line style and marker of series ``i``: the colours repeat every 10 series, so each round
    of colours gets its own line style and marker (13 variants stay 13 distinct lines)."""
    turn = (i // len(COLORS)) % len(LINESTYLES)
    return {"color": color_of(i), "linestyle": LINESTYLES[turn], "marker": MARKERS[turn]}


def ratio_ticks(lo: float, hi: float, min_gap: float = 0.085) -> list[float]:
    """Ticks of a log ratio axis from RATIO_TICKS, none closer than ``min_gap`` of the axis's log span
    (so their labels never overlap), 1 always kept."""
    span = math.log10(hi) - math.log10(lo)
    inside = [t for t in RATIO_TICKS if lo <= t <= hi]
    kept: list[float] = [1.0] if lo <= 1.0 <= hi else []
    # from 1 outwards, so that the ticks nearest "no change" survive the thinning
    for t in sorted(inside, key=lambda t: abs(math.log10(t))):
        if all(abs(math.log10(t) - math.log10(k)) >= min_gap * span for k in kept):
            kept.append(t)
    return sorted(kept)


def _ratio_axis(ax: Any, values: Sequence[float]) -> None:
    """Log x axis around the values (1 always inside), thinned ticks labelled 0.5x, 2x..."""
    ax.set_xscale("log")
    lo, hi = min(min(values), 0.9), max(max(values), 1.1)
    lo, hi = lo / 1.15, hi * 1.15
    ax.set_xlim(lo, hi)
    ticks = ratio_ticks(lo, hi)
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _fill(lo: float, hi: float, higher_is_better: bool | None) -> str:
    if higher_is_better is None or lo <= 1.0 <= hi:
        return NEUTRAL
    return GOOD if (lo > 1.0) == bool(higher_is_better) else BAD


def forest(rows: Sequence[dict[str, Any]], title: str, max_per_panel: int = 16, width: float = 9.0) -> str:
    """Ratios variant / baseline with their intervals: one panel per variant (``series``), one row per
    record (label: metric and condition), log x axis shared by the panels, line at 1.

    rows: {label, ratio, lo, hi, higher_is_better, series}. A point is green when the whole interval is on
    the better side of 1, red when on the worse side, grey otherwise. A panel with more rows than
    ``max_per_panel`` keeps the largest effects (its title says how many are left out).
    """
    panels: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        panels.setdefault(r["series"], []).append(r)
    left_out = {}
    for name, items in panels.items():
        if len(items) > max_per_panel:
            items.sort(key=lambda x: -abs(math.log(x["ratio"])))
            left_out[name] = len(items) - max_per_panel
            panels[name] = items[:max_per_panel]
        panels[name].sort(key=lambda x: x["label"])
    heights = [0.45 + 0.26 * len(items) for items in panels.values()]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(width, 0.7 + sum(heights)), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )  # fmt: skip
    values = [v for r in rows for v in (r["ratio"], r["lo"], r["hi"]) if v is not None and v > 0]
    for ax, (name, items) in zip(axes[:, 0], panels.items(), strict=True):
        ys = np.arange(len(items))[::-1]
        for y, r in zip(ys, items, strict=True):
            lo = r["lo"] if r["lo"] is not None else r["ratio"]
            hi = r["hi"] if r["hi"] is not None else r["ratio"]
            c = _fill(lo, hi, r["higher_is_better"])
            ax.plot([lo, hi], [y, y], color=c, lw=2.2, solid_capstyle="butt")
            ax.plot([r["ratio"]], [y], marker="o", color=c, markersize=6)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_yticks(ys, [r["label"] for r in items], fontsize=8)
        ax.set_ylim(-0.7, len(items) - 0.3)
        more = f" ({left_out[name]} smaller effects not shown)" if name in left_out else ""
        ax.set_title(f"{name}{more}", fontsize=9, loc="left")
        ax.grid(axis="x", which="major", alpha=0.3)
    if values:
        _ratio_axis(axes[0, 0], values)
    axes[-1, 0].set_xlabel(
        "variant / baseline (95% bootstrap CI): green better, red worse, grey not resolved"
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return to_data_uri(fig)


VERDICT_COLORS = {"meets": GOOD, "falls short": BAD, "inconclusive": "#c78a00"}


def claim_ranges(claims: Sequence[dict[str, Any]], title: str) -> str:
    """One panel per claim of an enhancement: the claimed range (shaded band, the bar to clear dashed)
    against every measurement attributed to it (point and interval, coloured by verdict).

    claims: {text, lo, hi, threshold, compare ("ratio" | "value"), better, measurements: [{label, value,
    lo, hi, verdict, aa_lo, aa_hi}]}. Ratio claims on a log axis with a line at 1 (no change), value
    claims linear; a grey line under a point is the A/A interval of its metric (the noise floor).
    """
    heights = [0.55 + 0.24 * max(1, len(c["measurements"])) for c in claims]
    fig, axes = plt.subplots(
        len(claims), 1, figsize=(9.0, 0.8 + sum(heights)), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )  # fmt: skip
    for ax, c in zip(axes[:, 0], claims, strict=True):
        ms = c["measurements"]
        ys = np.arange(len(ms))[::-1]
        values = [v for m in ms for v in (m["value"], m["lo"], m["hi"]) if v is not None]
        values += [v for v in (c["lo"], c["hi"]) if v is not None]
        if c["lo"] is not None and c["hi"] is not None:
            if c["hi"] > c["lo"]:
                ax.axvspan(c["lo"], c["hi"], color=GOOD, alpha=0.15, lw=0, label="claimed")
            if c["threshold"] is not None:
                ax.axvline(c["threshold"], color=GOOD, ls="--", lw=1.2, label="bar to clear")
        for y, m in zip(ys, ms, strict=True):
            if m.get("aa_lo") is not None and m.get("aa_hi") is not None:  # the noise floor, under the point
                ax.plot([m["aa_lo"], m["aa_hi"]], [y - 0.28, y - 0.28], color=NEUTRAL, lw=1.2, alpha=0.8)
                values += [m["aa_lo"], m["aa_hi"]]
            color = VERDICT_COLORS.get(m["verdict"].split(" (")[0], NEUTRAL)
            if m["lo"] is not None and m["hi"] is not None:
                ax.plot([m["lo"], m["hi"]], [y, y], color=color, lw=2.2, solid_capstyle="butt")
            ax.plot([m["value"]], [y], marker="o", color=color, markersize=6)
        ax.set_yticks(ys, [m["label"] for m in ms], fontsize=8)
        ax.set_ylim(-0.7, max(len(ms), 1) - 0.3)
        positive = [v for v in values if v > 0]
        if c["compare"] == "ratio" and positive:
            ax.axvline(1.0, color="black", lw=0.8)
            _ratio_axis(ax, positive)
        elif values:
            pad = 0.05 * (max(values) - min(values) or 1.0)
            ax.set_xlim(min(values) - pad, max(values) + pad)
        what = "variant / baseline" if c["compare"] == "ratio" else "value"
        ax.set_title(f"{c['text']} ({what}, {c['better']} is better)", fontsize=9, loc="left")
        ax.grid(axis="x", which="major", alpha=0.3)
        if not ms:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color=NEUTRAL)
    handles = [plt.Line2D([], [], color=col, marker="o", lw=2) for col in VERDICT_COLORS.values()]
    handles += [matplotlib.patches.Patch(color=GOOD, alpha=0.15), plt.Line2D([], [], color=NEUTRAL, lw=1.2)]
    labels = [*VERDICT_COLORS, "claimed range (dashed: the least claimed)", "A/A interval (noise floor)"]
    top = 1 - 0.3 / (0.5 + sum(heights))  # room for one line of legend above the panels
    fig.legend(handles, labels, fontsize=7, loc="upper left", ncol=5, frameon=False, title=title,
               title_fontsize=9, alignment="left")  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, top - 0.25 / (0.5 + sum(heights))))
    return to_data_uri(fig)


def sweep(
    lines: Sequence[dict[str, Any]],
    *,
    x_key: str,
    metric: str,
    unit: str,
    log_x: bool = False,
    hline: tuple[float, str] | None = None,
) -> str:
    """Metric against a numeric condition key, one line per series: {label, x, y, lo, hi}."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, line in enumerate(lines):
        order = np.argsort(line["x"])
        x = np.asarray(line["x"], dtype=float)[order]
        y = np.asarray(line["y"], dtype=float)[order]
        st = style_of(i)
        c = st["color"]
        ax.plot(x, y, label=line["label"], lw=1.5, markersize=4, **st)
        lo = np.asarray([np.nan if v is None else v for v in line["lo"]], dtype=float)[order]
        hi = np.asarray([np.nan if v is None else v for v in line["hi"]], dtype=float)[order]
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
        for y_ref, what in line.get("refs") or []:  # a labelled rung of the ladder ("clean")
            ax.axhline(y_ref, color=c, ls=":", lw=1.2, label=f"{line['label']}: {what}")
    if hline is not None:
        ax.axhline(hline[0], color=BAD, ls="--", lw=1, label=hline[1])
    if log_x:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    if unit == "bytes":
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: human_bytes(v)))
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"{metric} ({unit})" if unit else metric)
    ax.set_title(f"{metric} vs {x_key}", fontsize=10)
    ax.grid(alpha=0.3)
    if len(lines) > 1 or hline is not None or any(line.get("refs") for line in lines):
        ax.legend(fontsize=7, loc="best")
    return to_data_uri(fig)


def latency_distribution(
    series: dict[str, dict[str, np.ndarray]], budget_ms: float, stages: Sequence[str]
) -> str:
    """Per stage: a histogram (top) and a CDF (bottom) of frame times, one colour per variant/run."""
    fig, axes = plt.subplots(2, len(stages), figsize=(3.4 * len(stages), 5.6), squeeze=False)
    for j, stage in enumerate(stages):
        data = {k: v[stage] for k, v in series.items() if stage in v and len(v[stage])}
        if not data:
            axes[0, j].set_visible(False)
            axes[1, j].set_visible(False)
            continue
        allv = np.concatenate(list(data.values()))
        top = max(float(np.max(allv)), budget_ms if stage == "total" else 0.0) * 1.05
        bins = np.linspace(0, top, 40)
        for i, (label, v) in enumerate(data.items()):
            st = style_of(i)
            c, ls = st["color"], st["linestyle"]
            clipped = np.clip(v, 0, top)
            axes[0, j].hist(clipped, bins=bins, histtype="step", color=c, ls=ls, lw=1.4, label=label)
            xs = np.sort(v)
            axes[1, j].plot(xs, np.arange(1, xs.size + 1) / xs.size, color=c, ls=ls, lw=1.4, label=label)
        for ax in axes[:, j]:
            if budget_ms <= top:
                ax.axvline(budget_ms, color=BAD, ls="--", lw=1)
            ax.set_xlim(0, top)
            ax.grid(alpha=0.3)
        axes[0, j].set_title(f"{stage} (ms)", fontsize=10)
        axes[1, j].set_xlabel("frame time (ms); dashed: frame budget")
        axes[1, j].set_ylim(0, 1.01)
    axes[0, 0].set_ylabel("frames")
    axes[1, 0].set_ylabel("share of frames <= x")
    axes[1, 0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return to_data_uri(fig)


def frame_series(series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], budget_ms: float) -> str:
    """Total frame time along the conversation (frame index), phases marked: first, warm-up, measured."""
    fig, ax = plt.subplots(figsize=(9, 3.2))
    # the scale follows the measured frames: a first frame of seconds (a compile) would flatten the rest
    kept = [y[m & np.isfinite(y) & (y > 0)] for _, y, m in series.values()]
    kept = [k for k in kept if k.size]
    top = max([float(np.max(k)) for k in kept] + [budget_ms]) * 1.6
    bottom = min(float(np.min(k)) for k in kept) / 1.6 if kept else None
    off_scale = []
    for i, (label, (x, y, measured)) in enumerate(series.items()):
        st = style_of(i)
        c = st["color"]
        ax.plot(x, np.minimum(y, top), color=c, ls=st["linestyle"], lw=0.8, label=label)
        ax.plot(x[~measured], np.minimum(y[~measured], top), "x", color=c, markersize=5)
        over = y > top
        if over.any():
            ax.plot(x[over], np.full(int(over.sum()), top), "^", color=c, markersize=6)
            pairs = zip(x[over], y[over], strict=True)
            off_scale += [f"{label} frame {int(f)}: {v:.0f} ms" for f, v in pairs]
    ax.axhline(budget_ms, color=BAD, ls="--", lw=1, label="frame budget")
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    if off_scale:
        shown = "; ".join(off_scale[:4]) + (f"; +{len(off_scale) - 4} more" if len(off_scale) > 4 else "")
        ax.set_title(f"off the scale (drawn at the top, ^): {shown}", fontsize=8, loc="left")
    ax.set_xlabel("frame (x: first frame and warm-up, excluded from the statistics)")
    ax.set_ylabel("total frame time (ms)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper right")
    return to_data_uri(fig)


def human_bytes(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.0f} B"

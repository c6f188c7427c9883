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


def forest(rows: Sequence[dict[str, Any]], title: str) -> str:
    """Ratios variant / baseline with their intervals, one row each (log x axis, line at 1).

    rows: {label, ratio, lo, hi, higher_is_better, series} (series picks the colour: the variant).
    Points are green when the whole interval is on the better side of 1, red when on the worse side.
    """
    series = list(dict.fromkeys(r["series"] for r in rows))
    fig, ax = plt.subplots(figsize=(8.5, 0.9 + 0.24 * len(rows)))
    ys = np.arange(len(rows))[::-1]
    for y, r in zip(ys, rows, strict=True):
        lo = r["lo"] if r["lo"] is not None else r["ratio"]
        hi = r["hi"] if r["hi"] is not None else r["ratio"]
        better = r["higher_is_better"]
        if better is None or lo <= 1.0 <= hi:
            verdict = NEUTRAL
        else:
            verdict = GOOD if (lo > 1.0) == bool(better) else BAD
        c = color_of(series.index(r["series"]))
        ax.plot([lo, hi], [y, y], color=c, lw=2, solid_capstyle="butt")
        ax.plot([r["ratio"]], [y], marker="o", color=verdict, markeredgecolor=c, markersize=7, mew=1.5)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(ys, [r["label"] for r in rows], fontsize=8)
    ax.set_xscale("log")
    values = [v for r in rows for v in (r["ratio"], r["lo"], r["hi"]) if v is not None and v > 0]
    if values:
        lo, hi = min(min(values), 0.9), max(max(values), 1.1)
        ax.set_xlim(lo / 1.15, hi * 1.15)
        ticks = [t for t in RATIO_TICKS if lo / 1.15 <= t <= hi * 1.15]
        ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("variant / baseline (95% bootstrap CI); fill: green better, red worse, grey not resolved")
    ax.set_title(title, fontsize=10)
    handles = [plt.Line2D([], [], color=color_of(i), lw=2) for i in range(len(series))]
    ax.legend(handles, series, fontsize=8, loc="best")
    ax.grid(axis="x", which="both", alpha=0.3)
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
        c = color_of(i)
        ax.plot(x, y, marker="o", color=c, label=line["label"], lw=1.5, markersize=4)
        lo = np.asarray([np.nan if v is None else v for v in line["lo"]], dtype=float)[order]
        hi = np.asarray([np.nan if v is None else v for v in line["hi"]], dtype=float)[order]
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
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
    if len(lines) > 1 or hline is not None:
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
            c = color_of(i)
            axes[0, j].hist(np.clip(v, 0, top), bins=bins, histtype="step", color=c, lw=1.4, label=label)
            xs = np.sort(v)
            axes[1, j].plot(xs, np.arange(1, xs.size + 1) / xs.size, color=c, lw=1.4, label=label)
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
    for i, (label, (x, y, measured)) in enumerate(series.items()):
        c = color_of(i)
        ax.plot(x, y, color=c, lw=0.8, label=label)
        ax.plot(x[~measured], y[~measured], "x", color=c, markersize=5)
    ax.axhline(budget_ms, color=BAD, ls="--", lw=1, label="frame budget")
    ax.set_yscale("log")
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

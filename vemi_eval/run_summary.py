"""The short summary a run ends with: what it found, before any long table.

    status line (with the reasons when INVALID or INCOMPLETE)
    the claims it measured: a tally of verdicts, then one line per (claim, context)
    per variant, a few headline figures: value [95% CI] for the baseline, ratio [CI] with the baseline
      value it was taken against for the others (an interleaved baseline where the ratio was paired)
    where the report is, and how to see every figure

It fits a 120-column terminal and at most ``MAX_LINES`` lines whatever the suite (vLLM's benchmark summary
block, lm-eval's results table); the full table is ``vemi-eval show RUN_DIR`` or ``run --table``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .records import MEASURED, UNDERPOWERED

MAX_LINES = 40
WIDTH = 118
MAX_REASONS = 6
MAX_UNDERPOWERED = 3
MAX_CLAIM_LINES = 10
CLAIM_TEXT = 44  # characters of a claim's text in its line (the verdict is not cut)
FIGURE_LINES = 16  # the headline figures' share of MAX_LINES


@dataclass(frozen=True)
class Headline:
    """A figure worth a summary line: ``metric`` under a condition that holds ``where``."""

    label: str
    metric: str
    where: tuple[tuple[str, Any], ...] = ()


# The figures a reader looks for first, across the suites (the first ones present are shown).
HEADLINES = (
    Headline("accuracy", "answer_accuracy", (("snr_db", "clean"), ("source", "text"))),
    Headline("response", "response_latency_s", (("snr_db", "clean"), ("source", "text"))),
    Headline("answer WER", "answer_wer", (("snr_db", "clean"),)),
    Headline("answer WER median", "answer_wer_median", (("snr_db", "clean"),)),
    Headline("accuracy (teacher-forced)", "tf_answer_accuracy", (("user_channel", "clean"),)),
    Headline("frame p50", "frame_time_p50_ms", (("stage", "total"),)),
    Headline("LM p50", "frame_time_p50_ms", (("stage", "lm"),)),
    Headline("frame p99", "frame_time_p99_ms", (("stage", "total"),)),
    Headline("token agreement", "token_agreement"),
    Headline("PESQ-WB", "pesq_wb"),
    Headline("STOI", "stoi"),
    Headline("WER", "wer"),
    Headline("weights", "weight_bytes", (("component", "total"),)),
    Headline("KV cache/stream", "kv_cache_bytes_per_stream"),
    Headline("attention", "attention_time"),
    Headline("throughput", "throughput"),
    Headline("real-time streams", "max_realtime_streams"),
    Headline("speaker similarity", "speaker_similarity"),
    Headline("peak RSS +", "peak_rss_increase_bytes"),
)


@dataclass(frozen=True)
class Figure:
    variant: str
    text: str


QUIET_UNITS = ("fraction", "share", "cosine", "ratio", "x")  # a bare number says as much


def number(v: Any, unit: str = "") -> str:
    """4 significant digits; bytes as KiB/MiB/GiB."""
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        return "-"
    if unit == "bytes":
        for name, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(v) >= scale:
                return f"{v / scale:.3g} {name}"
        return f"{v:.0f} B"
    return f"{v:.4g}" + (f" {unit}" if unit and unit not in QUIET_UNITS else "")


def interval(lo: Any, hi: Any, digits: int = 4) -> str:
    if not isinstance(lo, int | float) or not isinstance(hi, int | float):
        return ""
    return f" [{lo:.{digits}g}, {hi:.{digits}g}]"


def condition_text(cond: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in cond.items())


def _cond_key(m: Mapping[str, Any]) -> str:
    return json.dumps(m.get("condition") or {}, sort_keys=True, default=str)


def _numeric(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return -math.inf


def _pick(records: Sequence[Mapping[str, Any]], h: Headline) -> Mapping[str, Any] | None:
    """The record standing for a headline: its metric under ``where``; among several, the fewest other
    condition keys, then the largest values (the most codebooks, the longest context)."""
    found = []
    for m in records:
        cond = m.get("condition") or {}
        if m.get("metric") != h.metric or "reference_codec" in cond:  # yardsticks are not the model
            continue
        if all(cond.get(k) == v for k, v in h.where) and m.get("value") is not None:
            found.append(m)
    if not found:
        return None

    def rank(m: Mapping[str, Any]) -> tuple:
        cond = m.get("condition") or {}
        extra = [k for k in cond if k not in dict(h.where)]
        return (-len(extra), tuple(_numeric(cond[k]) for k in sorted(extra)))

    return max(found, key=rank)


def baseline_value(m: Mapping[str, Any], baseline: Mapping[str, Mapping[str, Any]]) -> Any:
    """The value a ratio was taken against: the interleaved twin where the ratio was paired, else the
    baseline variant's record of the same metric and condition."""
    paired = (m.get("extra") or {}).get("paired_baseline")
    if isinstance(paired, Mapping) and paired.get("value"):
        return paired["value"]
    b = baseline.get(f"{m.get('metric')}|{_cond_key(m)}")
    return None if b is None else b.get("value")


def figure_text(label: str, m: Mapping[str, Any], base: Any, verdict: str = "") -> str:
    unit = m.get("unit") or ""
    r = m.get("ratio_to_baseline")
    if r is None:
        text = f"{label} {number(m.get('value'), unit)}{interval(m.get('ci_low'), m.get('ci_high'))}"
    else:
        of = f" of {number(base, unit)}" if base is not None else ""
        text = f"{label} x{r:.3g}{interval(m.get('ratio_ci_low'), m.get('ratio_ci_high'), 3)}{of}"
    if m.get("status") not in (None, "ok"):
        text += f" ({m['status']})"
    return text + (f" ({verdict})" if verdict else "")


def _claim_index(matrix: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], str]:
    """(variant, metric, condition) -> "5.1 falls short" for every record a claim was judged on."""
    out: dict[tuple[str, str, str], str] = {}
    for e in matrix:
        for c in e.get("claims", []):
            for m in c.get("measurements", []):
                key = (m["variant"], m["metric"], _cond_key(m))
                out.setdefault(key, f"{e['id']} {m.get('verdict_kind') or m.get('verdict', '')}")
    return out


@dataclass(frozen=True)
class HeadlineRecord:
    """A variant's headline figure: its label, the record, the baseline value a ratio was taken against
    and the claim verdict it carries ("5.1 falls short"), if any."""

    variant: str
    label: str
    record: Mapping[str, Any]
    base: Any
    verdict: str


def headline_records(
    doc: Mapping[str, Any], matrix: Sequence[Mapping[str, Any]], per_variant: int
) -> list[HeadlineRecord]:
    """Up to ``per_variant`` headline figures per variant: for a compared variant the records a claim was
    judged on first, then the headline list; a suite none of whose metrics is listed shows its first."""
    metrics = [
        m for m in doc.get("metrics", []) if m.get("status") in MEASURED and m.get("value") is not None
    ]
    variants = [v["name"] for v in doc.get("variants", [])]
    variants = variants or list(dict.fromkeys(m["variant"] for m in metrics))
    base_name = variants[0] if variants else ""
    baseline = {f"{m['metric']}|{_cond_key(m)}": m for m in metrics if m["variant"] == base_name}
    claims = _claim_index(matrix)
    out = []
    for v in variants:
        mine = [m for m in metrics if m["variant"] == v]
        chosen: list[tuple[str, Mapping[str, Any]]] = []
        for m in mine:
            if (v, m["metric"], _cond_key(m)) in claims and len(chosen) < per_variant:
                if not any(m is c for _, c in chosen):
                    chosen.append((_short_label(m), m))
        for h in HEADLINES:
            m = _pick(mine, h)
            if m is not None and len(chosen) < per_variant and not any(m is c for _, c in chosen):
                chosen.append((h.label, m))
        for m in mine:  # nothing listed: the variant's first records
            if len(chosen) >= per_variant:
                break
            if not any(m is c for _, c in chosen):
                chosen.append((_short_label(m), m))
        for label, m in chosen:
            verdict = claims.get((v, m["metric"], _cond_key(m)), "")
            out.append(HeadlineRecord(v, label, m, baseline_value(m, baseline), verdict))
    return out


def variant_figures(
    doc: Mapping[str, Any], matrix: Sequence[Mapping[str, Any]], per_variant: int
) -> list[Figure]:
    """The headline figures as text, one per (variant, figure)."""
    return [
        Figure(h.variant, figure_text(h.label, h.record, h.base, h.verdict))
        for h in headline_records(doc, matrix, per_variant)
    ]


def _short_label(m: Mapping[str, Any]) -> str:
    """A headline's label where the record is one exactly, else metric[condition]."""
    cond = m.get("condition") or {}
    for h in HEADLINES:
        if h.metric == m["metric"] and cond == dict(h.where):
            return h.label
    cond = condition_text(cond)
    return f"{m['metric']}" + (f"[{cond}]" if cond else "")


def wrap_figures(figures: Sequence[Figure], width: int = WIDTH) -> list[str]:
    """One line per variant (continued on indented lines when its figures do not fit)."""
    names = list(dict.fromkeys(f.variant for f in figures))
    pad = min(22, max((len(n) for n in names), default=0)) + 2
    lines = []
    for name in names:
        line = "  " + name.ljust(pad)
        first = True
        for f in (f for f in figures if f.variant == name):
            piece = f.text if first else "; " + f.text
            if not first and len(line) + len(piece) > width:
                lines.append(line + ";")
                line, piece = " " * (pad + 2), f.text
            line += piece
            first = False
        lines.append(line)
    return lines


def claim_lines(matrix: Sequence[Mapping[str, Any]], limit: int = MAX_CLAIM_LINES) -> tuple[str, list[str]]:
    """A tally of the verdicts of every measured (claim, context) row, and up to ``limit`` rows."""
    from .claim_verdicts import NOT_MEASURED

    counts: dict[str, int] = {}
    lines = []
    for e in matrix:
        for c in e.get("claims", []):
            for row in c.get("rows", []):
                kind = row.get("verdict_kind") or row["verdict"].split(":")[0]
                counts[kind] = counts.get(kind, 0) + 1
                first = row["measurements"][0]
                more = len(row["measurements"]) - 1
                claimed = ""
                if c.get("claimed_low") is not None:
                    lo, hi = c["claimed_low"], c.get("claimed_high")
                    claimed = f", claimed {lo:.3g}" + (f"-{hi:.3g}" if hi not in (None, lo) else "")
                ci = interval(first.get("ci_low"), first.get("ci_high"), 3)
                measured = f"{first['variant']} {first['measured']:.3g}{ci}" + (f" (+{more})" if more else "")
                claim = _cut(f"{e['id']} {c['text']}", CLAIM_TEXT)
                lines.append(f"  {claim}{claimed}: {measured} -> {row['verdict']}")
    measured = sum(counts.values())
    if not measured:
        return f"claims: this run measures none of the document's claims ({NOT_MEASURED})", []
    order = ("meets", "falls short", "inconclusive", "underpowered", "mixed", "proxy", "not applicable")
    parts = [f"{k} {counts[k]}" for k in order if k in counts]
    parts += [f"{k} {n}" for k, n in counts.items() if k not in order]
    tally = f"claims measured ({measured} claim x context rows): " + ", ".join(parts)
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... {len(lines) - limit} more: `vemi-eval matrix RUN_DIR` or the report"]
    return tally, [_cut(x) for x in lines]


def _cut(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def elapsed_text(doc: Mapping[str, Any]) -> str:
    from .progress import duration

    try:
        a = datetime.fromisoformat(str(doc.get("started")))
        b = datetime.fromisoformat(str(doc.get("finished")))
    except ValueError:
        return ""
    return f" in {duration((b - a).total_seconds())}"


def status_lines(doc: Mapping[str, Any]) -> list[str]:
    """The status and, for a run that is not VALID, why: each reason once."""
    counts: dict[str, int] = {}
    for m in doc.get("metrics", []):
        counts[m.get("status", "ok")] = counts.get(m.get("status", "ok"), 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda x: -x[1]))
    suite = (doc.get("suite") or {}).get("name", "")
    n_var = len(doc.get("variants", []))
    lines = [f"status: {doc.get('status')}  suite {suite}{elapsed_text(doc)}: {n_var} variant(s), "
             f"{len(doc.get('metrics', []))} records ({tally or 'none'})"]  # fmt: skip
    reasons = list(dict.fromkeys(doc.get("invalid_reasons") or []))
    reasons += [f"error: {e['kind']}/{e['variant']}: {e['error']}" for e in doc.get("errors") or []]
    reasons += [f"not measured: {m}" for m in doc.get("missing") or []]
    for r in reasons[:MAX_REASONS]:
        lines.append(_cut(f"  {'invalid: ' if r in (doc.get('invalid_reasons') or []) else ''}{r}"))
    if len(reasons) > MAX_REASONS:
        more = len(reasons) - MAX_REASONS
        lines.append(f"  ... {more} more reasons: results.json (invalid_reasons, errors)")
    return lines + underpowered_lines(doc)


def _too_few(m: Mapping[str, Any]) -> str:
    """ "n=1 take-overs < min_samples=4" from the runner's reason; "n=0 take-overs" when none happened."""
    reason = str(m.get("reason") or "")
    if "underpowered: " in reason:
        return reason.rsplit("underpowered: ", 1)[1].removesuffix(", no verdict")
    return f"n={m.get('n') or 0} {m.get('conditional_on') or 'events'}"


def underpowered_lines(doc: Mapping[str, Any]) -> list[str]:
    """The records measured on too few of the events they are conditioned on: shown, never a verdict."""
    under = [m for m in doc.get("metrics", []) if m.get("status") == UNDERPOWERED]
    lines = []
    for m in under[:MAX_UNDERPOWERED]:
        cond = ",".join(f"{k}={v}" for k, v in (m.get("condition") or {}).items())
        where = f"{m.get('variant')}/{m.get('metric')}" + (f"[{cond}]" if cond else "")
        # n and the threshold first: a long condition is what the width cuts
        lines.append(_cut(f"  underpowered, {_too_few(m)}: {where}"))
    if len(under) > MAX_UNDERPOWERED:
        more = len(under) - MAX_UNDERPOWERED
        lines.append(f"  ... {more} more underpowered records: vemi-eval show RUN_DIR")
    return lines


def summary_lines(
    doc: Mapping[str, Any],
    out_dir: Path,
    report: Path | None,
    matrix: Sequence[Mapping[str, Any]] | None = None,
) -> list[str]:
    """The run's summary block, at most MAX_LINES lines of at most WIDTH characters."""
    if matrix is None:
        from .registry import priority_matrix

        matrix = priority_matrix([doc])
    lines = status_lines(doc)
    tally, claims = claim_lines(matrix)
    lines += [tally, *claims]
    per_variant, figs = 5, []
    while per_variant >= 1:  # as many figures per variant as fit the block
        figs = wrap_figures(variant_figures(doc, matrix, per_variant))
        if len(figs) <= FIGURE_LINES or per_variant == 1:
            break
        per_variant -= 1
    if len(figs) > FIGURE_LINES:
        more = len(figs) - FIGURE_LINES
        figs = figs[:FIGURE_LINES] + [f"  ... {more} more lines: vemi-eval show {out_dir}"]
    if figs:
        lines += ["figures (value [95% CI]; other variants: ratio to the baseline [CI] of its value):", *figs]
    footer = [
        f"report: {report}" if report else f"report: not built (vemi-eval report {out_dir})",
        f"every figure: vemi-eval show {out_dir}",
    ]
    return lines[: MAX_LINES - len(footer)] + footer

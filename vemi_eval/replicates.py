"""Pooling the replicates of a variant (one checkpoint per training seed) into the variant's records.

Each replicate is measured as a run of its own; its records are then pooled per (metric, condition) before
the runner computes intervals and ratios: a record with raw samples pools them (the value is the record's
statistic over all of them), one without (a byte count, a score over fixed data) takes the replicates'
values as its samples, so the interval is the spread between seeds. Every replicate's own figures stay in
the record's ``replicates`` field. A record measured ok on only some replicates is INVALID (its value would
describe a subset of the seeds); on none, FAILED.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np

from .records import FAILED, INVALID, MEASURED, OK, UNDERPOWERED, MetricRecord
from .stats import infer_statistic, summarize

Replicate = tuple[int, list[MetricRecord], list[dict[str, Any]]]  # (index, records, ctx sample rows)


def _key(rec: MetricRecord) -> tuple[str, str]:
    return rec.metric, json.dumps(rec.condition, sort_keys=True, default=str)


def record_samples(rec: MetricRecord, rows: list[dict[str, Any]]) -> list[float] | None:
    """Raw samples behind a record: its own samples, else ctx rows naming its metric and condition."""
    s = rec.samples
    if isinstance(s, list) and s and all(isinstance(x, (int, float)) for x in s):
        return [float(x) for x in s]
    picked = [
        float(r["value"])
        for r in rows
        if r.get("metric") == rec.metric
        and isinstance(r.get("value"), (int, float))
        and all(r.get(k) == v for k, v in rec.condition.items())
    ]
    return picked or None


def pool_replicates(replicates: list[Replicate]) -> tuple[list[MetricRecord], list[dict[str, Any]]]:
    """The variant's records and sample rows over all its replicates (rows gain a ``replicate`` column)."""
    n = len(replicates)
    groups: dict[tuple[str, str], list[tuple[int, MetricRecord, list[dict[str, Any]]]]] = {}
    for r, records, rows in replicates:
        for rec in records:
            groups.setdefault(_key(rec), []).append((r, rec, rows))
    pooled = [_pool(items, n) for items in groups.values()]
    rows = [{**row, "replicate": r} for r, _, rr in replicates for row in rr]
    return pooled, rows


def _pool(items: list[tuple[int, MetricRecord, list[dict[str, Any]]]], n: int) -> MetricRecord:
    out = copy.deepcopy(items[0][1])
    out.replicates = [
        {"replicate": r, "value": rec.value, "ci_low": rec.ci_low, "ci_high": rec.ci_high, "n": rec.n,
         "status": rec.status, "reason": rec.reason}
        for r, rec, _ in items
    ]  # fmt: skip
    ok = [(r, rec, rows) for r, rec, rows in items if rec.status in MEASURED and rec.value is not None]
    out.ci_low = out.ci_high = None
    if not ok:
        out.status, out.value = FAILED, None
        first = items[0][1].reason
        out.reason = f"scored on none of {n} replicates" + (f"; first: {first}" if first else "")
        return out
    own = [rec.samples if isinstance(rec.samples, list) and rec.samples else None for _, rec, _ in ok]
    from_rows = [record_samples(rec, rows) for _, rec, rows in ok]
    raw = own if all(own) else (from_rows if all(from_rows) else None)
    stat = None
    if raw is not None:  # the statistic the value is of the samples (named, else inferred)
        named = out.statistic if isinstance(out.statistic, str) else None
        stat = named or infer_statistic(raw[0], float(ok[0][1].value))
    if raw is not None and stat is not None:
        samples = [float(x) for s in raw for x in s]
        out.samples = samples if raw is own else None  # pooled ctx rows (replicate column) carry the others
    else:  # no raw samples: the replicates' values are the samples (the spread between seeds)
        samples, stat = [float(rec.value) for _, rec, _ in ok], "mean"
        out.samples = samples
    out.statistic = stat
    out.value = summarize(np.asarray(samples), stat)
    out.n = sum(int(rec.n or 0) for _, rec, _ in ok)
    _pool_paired(out, [rec for _, rec, _ in ok])
    statuses = {rec.status for _, rec, _ in ok}
    # a broken rule on any replicate outweighs too few conditional events on some
    out.status = INVALID if INVALID in statuses else (UNDERPOWERED if UNDERPOWERED in statuses else OK)
    if len(ok) < n:
        out.status = INVALID
        note = f"ok on {len(ok)} of {n} replicates"
        out.reason = f"{out.reason}; {note}" if out.reason else note
    elif out.status != OK:
        out.reason = "; ".join(sorted({rec.reason for _, rec, _ in ok if rec.reason}))
    return out


def _pool_paired(out: MetricRecord, ok: list[MetricRecord]) -> None:
    """A record measured side by side with the baseline (``paired_baseline`` in extra): its twin's
    samples are pooled as its own are; a twin missing on some replicate drops the pairing (the ratio is
    then taken to the baseline's own record)."""
    twins = [rec.extra.get("paired_baseline") for rec in ok]
    if not any(twins):
        return
    first = out.extra.get("paired_baseline")
    samples = [t.get("samples") for t in twins if isinstance(t, dict)]
    if (
        len(samples) != len(ok)
        or not all(samples)
        or not isinstance(first, dict)
        or not first.get("statistic")
    ):
        out.extra.pop("paired_baseline", None)
        return
    pooled = [float(x) for s in samples for x in s]
    value = summarize(np.asarray(pooled), first["statistic"])
    out.extra["paired_baseline"] = {**first, "samples": pooled, "value": value, "ci": [None, None]}

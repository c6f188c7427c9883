"""Aggregation of one run's measurements: what the partial file's entries add up to.

The runner measures and appends; this module turns the entries into the run's records and status and
never calls back into the runner: a record's validity under the suite's rules, the replicates of a
variant pooled (vemi_eval/replicates.py), each record's interval from its raw samples and its ratio to
the baseline, why a (kind, variant) that scored nothing makes the run INVALID, and the run's status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .records import FAILED, INVALID, MEASURED, OK, UNDERPOWERED, MetricRecord
from .replicates import pool_replicates, record_samples
from .rundir import INCOMPLETE, VALID, entry_key
from .rundir import INVALID as INVALID_RUN
from .stats import bootstrap_ci, infer_statistic, is_sample_statistic, ratio_ci

log = logging.getLogger("vemi_eval.run")

DEFAULT_MAX_FAILED_SHARE = 0.5  # [validity] max_failed_share: a kind with more failed records is INVALID


# --- validity, ratios -------------------------------------------------------------------------------
def apply_validity(rec: MetricRecord, rules: dict[str, Any]) -> None:
    """Mark an ok record INVALID when it breaks a suite rule (too few samples, frames or seconds), or
    UNDERPOWERED when its only fault is too few of the events it is conditioned on (``conditional_on``):
    shown with n and the threshold, never a verdict, and not a broken rule of the run."""
    if rec.status != OK:
        return
    why = []
    few = "min_samples" in rules and rec.n < rules["min_samples"]
    if few:
        why.append(f"n={rec.n} < min_samples={rules['min_samples']}")
    frames = rec.extra.get("frames")
    if "min_frames" in rules and isinstance(frames, (int, float)) and frames < rules["min_frames"]:
        why.append(f"frames={frames} < min_frames={rules['min_frames']}")
    dur = rec.extra.get("duration_s")
    if "min_duration_s" in rules and isinstance(dur, (int, float)) and dur < rules["min_duration_s"]:
        why.append(f"duration {dur:.2f}s < min_duration_s={rules['min_duration_s']}")
    if few and rec.conditional_on and len(why) == 1:
        low = rules["min_samples"]
        why = [f"underpowered: n={rec.n} {rec.conditional_on} < min_samples={low}, no verdict"]
        rec.status = UNDERPOWERED
    elif why:
        rec.status = INVALID
    if why:
        rec.reason = "; ".join([rec.reason] + why if rec.reason else why)


def _cond_key(rec: MetricRecord) -> str:
    return json.dumps(rec.condition, sort_keys=True, default=str)


def _statistic(rec: MetricRecord, samples: list[float]) -> str | None:
    stat = rec.statistic
    if isinstance(stat, str):
        return stat
    return infer_statistic(samples, rec.value) if rec.value is not None else None


def fill_intervals(
    records: list[MetricRecord], rows: dict[tuple[str, str], list[dict[str, Any]]], baseline: str, seed: int
) -> None:
    """Own CI from raw samples where missing; ratio to the baseline (+ bootstrap CI) for other variants."""
    by_key = {}
    for r in records:
        if r.variant == baseline and r.value is not None:
            by_key[(r.kind, r.metric, _cond_key(r))] = r

    def samples_of(r: MetricRecord) -> list[float] | None:
        return record_samples(r, rows.get((r.kind, r.variant), []))

    for r in records:
        if r.value is None or r.status not in MEASURED:
            continue
        samples = samples_of(r)
        stat = _statistic(r, samples) if samples else None
        if samples and stat and r.ci_low is None and len(samples) > 1 and is_sample_statistic(stat):
            r.ci_low, r.ci_high = bootstrap_ci(samples, stat, seed=seed)
        if r.variant == baseline or r.ratio_to_baseline is not None:
            continue
        paired = r.extra.get("paired_baseline") if isinstance(r.extra, dict) else None
        if isinstance(paired, dict) and paired.get("value"):
            # measured side by side with the baseline (interleaved blocks): the ratio is to that twin
            b_value, b_samples, b_stat = paired["value"], paired.get("samples"), paired.get("statistic")
        else:
            b = by_key.get((r.kind, r.metric, _cond_key(r)))
            if b is None or not b.value:
                continue
            b_value, b_samples = b.value, samples_of(b)
            b_stat = _statistic(b, b_samples) if b_samples else None
        r.ratio_to_baseline = r.value / b_value
        # an interval by resampling needs a statistic of the samples (a WER's total errors / total words
        # is not one: its ratio stands without an interval)
        if samples and b_samples and stat and b_stat == stat and is_sample_statistic(stat):
            try:
                _, r.ratio_ci_low, r.ratio_ci_high = ratio_ci(samples, b_samples, stat, seed=seed)
            except ValueError as exc:  # a zero baseline statistic: the ratio stands without an interval
                log.info("no ratio interval for %s/%s: %s", r.variant, r.metric, exc)


def scoring_problems(kind: str, variant: str, records: list[MetricRecord], max_failed: float) -> list[str]:
    """Why a (kind, variant) makes the run INVALID although no record broke a rule: it scored nothing
    (no record, or none ok: underpowered records bear no verdict), or more than ``max_failed`` of its
    records failed."""
    if not records:
        return [f"{variant}/{kind}: scored nothing (the measurement returned no record)"]
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    if not (by_status.get(OK, 0) + by_status.get(INVALID, 0)):
        counts = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
        first = next((r.reason for r in records if r.reason), "")
        what = "nothing but underpowered records" if by_status.get(UNDERPOWERED) else "nothing"
        return [f"{variant}/{kind}: scored {what} ({counts}" + (f"; first: {first})" if first else ")")]
    failed = by_status.get(FAILED, 0)
    if failed / len(records) > max_failed:
        return [
            f"{variant}/{kind}: {failed} of {len(records)} records failed (more than max_failed_share "
            f"{max_failed:g})"
        ]
    return []


def invalid_line(rec: MetricRecord) -> str:
    """variant/metric[condition]: why, so that records of one metric under two conditions read apart."""
    cond = ",".join(f"{k}={v}" for k, v in rec.condition.items())
    return f"{rec.variant}/{rec.metric}" + (f"[{cond}]" if cond else "") + f": {rec.reason or 'invalid'}"


# --- the run's records and status ---------------------------------------------------------------------
@dataclass(frozen=True)
class Aggregate:
    """The run's records (replicates pooled, intervals and ratios filled) and what its status rests on."""

    records: list[MetricRecord]
    sample_rows: list[dict[str, Any]]  # what the measurements gave to ctx.add_samples
    errors: list[dict[str, Any]]  # {kind, variant[, replicate], error} of each crashed measurement
    skipped_inputs: list[dict[str, Any]]  # {kind, variant[, replicate], input, reason}
    missing: list[str]  # "kind/variant[ replicate N]" planned but never finished
    invalid_reasons: list[str]
    status: str  # VALID | INVALID | INCOMPLETE
    evaluators: dict[str, Any]  # evaluator name -> its version facts, over every record
    data: dict[str, Any]  # data hashes, over every record


def aggregate(
    entries: list[dict[str, Any]],
    planned: set[tuple[str, str, int]],
    replicates: Mapping[str, int],
    baseline: str,
    seed: int,
    validity: Mapping[str, Any],
    interrupted: bool = False,
) -> Aggregate:
    """The run from its partial-file entries (the last entry per (kind, variant, replicate) wins).

    ``planned``: every (kind, variant, replicate) the run meant to measure; ``replicates``: how many
    replicates each variant has."""
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for e in entries:
        if e.get("type") in ("result", "error"):
            latest[entry_key(e)] = e
    records: list[MetricRecord] = []
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    errors = []
    unscored = []
    skipped_inputs = []
    max_failed = float(validity.get("max_failed_share", DEFAULT_MAX_FAILED_SHARE))
    by_pair: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for (kind, variant, r), e in latest.items():
        by_pair.setdefault((kind, variant), []).append((r, e))
    for key, reps in by_pair.items():
        n_reps = replicates.get(key[1], 1)
        done_reps: list[tuple[int, list[MetricRecord], list[dict[str, Any]]]] = []
        for r, e in sorted(reps, key=lambda x: x[0]):
            where = {"kind": key[0], "variant": key[1]} | ({"replicate": r} if n_reps > 1 else {})
            if e["type"] == "error":
                errors.append({**where, "error": e["error"]})
                continue
            done_reps.append((r, [MetricRecord.from_dict(d) for d in e["records"]], e.get("samples", [])))
            skipped_inputs += [{**where, **s} for s in e.get("skipped_inputs") or []]
        if not done_reps:
            continue
        mine, rows[key] = pool_replicates(done_reps) if n_reps > 1 else done_reps[0][1:]
        records += mine
        if not any(e.get("skipped_variant") for _, e in reps):
            unscored += scoring_problems(key[0], key[1], mine, max_failed)
    fill_intervals(records, rows, baseline, seed)

    missing = sorted(
        (k, v + (f" replicate {r + 1}" if replicates[v] > 1 else "")) for k, v, r in planned - set(latest)
    )
    invalid = [invalid_line(r) for r in records if r.status == INVALID]
    invalid = list(dict.fromkeys(invalid + unscored))  # each reason once
    if errors or interrupted or missing:
        status = INCOMPLETE
    elif invalid:
        status = INVALID_RUN
    else:
        status = VALID
    evaluators: dict[str, Any] = {}
    data_hashes: dict[str, Any] = {}
    for r in records:
        ev = r.evaluator
        if isinstance(ev, dict) and ev.get("name"):
            evaluators[ev["name"]] = {k: v for k, v in ev.items() if k != "name"}
        data_hashes.update(r.data)
    return Aggregate(
        records=records,
        sample_rows=[row for rr in rows.values() for row in rr],
        errors=errors,
        skipped_inputs=skipped_inputs,
        missing=[f"{k}/{v}" for k, v in missing],
        invalid_reasons=invalid,
        status=status,
        evaluators=evaluators,
        data=data_hashes,
    )

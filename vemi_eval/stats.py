"""Statistics on raw samples: bootstrap confidence intervals, variant/baseline ratios, Mann-Whitney U.

Percentile bootstrap with a fixed seed: the same samples always give the same interval. Statistics are
named ("median", "mean", "p90", "p99", ...) so that a record can say which one its value is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

# Bootstrap resamples are drawn in chunks so that n_boot x n stays under this many indices (memory).
_CHUNK_ELEMENTS = 4_000_000

StatFn = Callable[[np.ndarray, int], np.ndarray]


def statistic_fn(name: str) -> StatFn:
    """A vectorised statistic ``f(array, axis)`` for a name: median, mean, min, max, std, pNN (pNN.N)."""
    name = name.strip().lower()
    if name == "median":
        return lambda a, axis: np.median(a, axis=axis)
    if name == "mean":
        return lambda a, axis: np.mean(a, axis=axis)
    if name == "min":
        return lambda a, axis: np.min(a, axis=axis)
    if name == "max":
        return lambda a, axis: np.max(a, axis=axis)
    if name == "std":
        return lambda a, axis: np.std(a, axis=axis, ddof=1)
    m = re.fullmatch(r"p(\d+(?:\.\d+)?)", name)
    if m and 0.0 <= float(m.group(1)) <= 100.0:
        q = float(m.group(1))
        return lambda a, axis: np.percentile(a, q, axis=axis)
    raise ValueError(f"unknown statistic {name!r} (median, mean, min, max, std or pNN such as p90)")


def is_sample_statistic(name: str) -> bool:
    """Whether ``name`` is a statistic of a sample that statistic_fn computes (median, mean, p90, ...)."""
    try:
        statistic_fn(name)
    except ValueError:
        return False
    return True


def _as_samples(samples: Sequence[float] | np.ndarray, what: str = "samples") -> np.ndarray:
    a = np.asarray(samples, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{what}: no samples")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: non-finite sample")
    return a


def _bootstrap_distribution(a: np.ndarray, fn: StatFn, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(n_boot)
    chunk = max(1, _CHUNK_ELEMENTS // a.size)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, a.size, size=(stop - start, a.size))
        out[start:stop] = fn(a[idx], 1)
    return out


def summarize(samples: Sequence[float] | np.ndarray, statistic: str = "median") -> float:
    return float(statistic_fn(statistic)(_as_samples(samples), 0))


def bootstrap_ci(
    samples: Sequence[float] | np.ndarray,
    statistic: str = "median",
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` over ``samples``. One sample gives a zero-width one."""
    a = _as_samples(samples)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    fn = statistic_fn(statistic)
    if a.size == 1:
        v = float(a[0])
        return v, v
    dist = _bootstrap_distribution(a, fn, n_boot, np.random.default_rng(seed))
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(dist, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def ratio_ci(
    variant: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    statistic: str = "median",
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float | None, float | None]:
    """statistic(variant) / statistic(baseline) and its bootstrap interval (both resampled independently).

    The interval is None when the baseline statistic can be zero in a resample (a ratio to zero means
    nothing): the caller reports the ratio alone.
    """
    v = _as_samples(variant, "variant samples")
    b = _as_samples(baseline, "baseline samples")
    fn = statistic_fn(statistic)
    b_stat = float(fn(b, 0))
    if b_stat == 0.0:
        raise ValueError("baseline statistic is zero: no ratio")
    ratio = float(fn(v, 0)) / b_stat
    rng = np.random.default_rng(seed)
    dv = _bootstrap_distribution(v, fn, n_boot, rng)
    db = _bootstrap_distribution(b, fn, n_boot, rng)
    if np.any(db == 0.0):
        return ratio, None, None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(dv / db, [alpha, 1.0 - alpha])
    return ratio, float(lo), float(hi)


def mann_whitney(
    current: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    alternative: str = "two-sided",
) -> float:
    """p-value of the Mann-Whitney U test (scipy). alternative "greater": current tends to be larger."""
    from scipy.stats import mannwhitneyu

    a = _as_samples(current, "current samples")
    b = _as_samples(baseline, "baseline samples")
    if np.all(a == a[0]) and np.all(b == b[0]) and a[0] == b[0]:
        return 1.0  # identical constants: no evidence of any shift (scipy would warn and return nan)
    return float(mannwhitneyu(a, b, alternative=alternative).pvalue)


def infer_statistic(samples: Sequence[float] | np.ndarray, value: float, rel_tol: float = 1e-6) -> str | None:
    """Which named statistic of ``samples`` equals ``value`` (median, mean, p90, p95, p99...), or None.

    Used when a measurement hands raw samples without saying which statistic its value is.
    """
    a = _as_samples(samples)
    for name in ("median", "mean", "p90", "p95", "p99", "p10", "p5", "p1", "min", "max"):
        s = float(statistic_fn(name)(a, 0))
        if math.isclose(s, float(value), rel_tol=rel_tol, abs_tol=1e-12):
            return name
    return None


def counts_by_group(items: Iterable[tuple[str, int, int]], total: str = "n") -> dict[str, dict[str, int]]:
    """Sum (group, correct, scored) items per group, sorted by group: {group: {"correct": c, total: n}}.
    A pooled accuracy hides the few held-out voices a model does not generalise to; the per-voice
    counts of the dialogue and lm_heldout kinds and of the LM trainer's held-out figures come from here."""
    out: dict[str, dict[str, int]] = {}
    for group, correct, scored in items:
        tally = out.setdefault(group, {"correct": 0, total: 0})
        tally["correct"] += int(correct)
        tally[total] += int(scored)
    return dict(sorted(out.items()))

"""Bootstrap intervals cover the truth at about their nominal rate; ratios and Mann-Whitney behave."""

from __future__ import annotations

import numpy as np
import pytest

from vemi_eval.stats import bootstrap_ci, infer_statistic, mann_whitney, ratio_ci, statistic_fn, summarize


def test_bootstrap_ci_covers_the_true_median_most_of_the_time() -> None:
    rng = np.random.default_rng(0)
    true_median = 10.0  # lognormal(log 10, s): median exactly 10
    trials, covered = 200, 0
    for t in range(trials):
        x = rng.lognormal(np.log(true_median), 0.5, size=60)
        lo, hi = bootstrap_ci(x, "median", n_boot=1000, seed=t)
        covered += lo <= true_median <= hi
    assert 0.88 <= covered / trials <= 0.995  # nominal 0.95


def test_bootstrap_ci_of_the_mean_and_p90_cover_and_shrink_with_n() -> None:
    rng = np.random.default_rng(1)
    covered = sum(
        lo <= 5.0 <= hi
        for lo, hi in (bootstrap_ci(rng.normal(5.0, 2.0, 80), "mean", n_boot=800, seed=i) for i in range(150))
    )
    assert covered / 150 >= 0.88
    small = bootstrap_ci(rng.exponential(1.0, 50), "p90", seed=0)
    large = bootstrap_ci(rng.exponential(1.0, 5000), "p90", seed=0)
    assert (large[1] - large[0]) < (small[1] - small[0])
    assert large[0] <= np.log(10) <= large[1]  # p90 of Exp(1) = ln 10


def test_ratio_ci_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(2)
    covered = 0
    for i in range(100):
        a = rng.lognormal(np.log(13.0), 0.3, 50)
        b = rng.lognormal(np.log(10.0), 0.3, 50)
        r, lo, hi = ratio_ci(a, b, "median", n_boot=800, seed=i)
        assert lo <= r <= hi
        covered += lo <= 1.3 <= hi
    assert covered >= 85


def test_mann_whitney_separates_shift_from_noise() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(10, 1, 100)
    assert mann_whitney(base * 1.3, base, alternative="greater") < 1e-6
    assert mann_whitney(rng.normal(10, 1, 100), base, alternative="greater") > 0.01
    assert mann_whitney([1.0, 1.0], [1.0, 1.0]) == 1.0


def test_statistics_by_name_and_inference() -> None:
    x = np.arange(1.0, 101.0)
    assert summarize(x, "median") == 50.5 and summarize(x, "p90") == pytest.approx(np.percentile(x, 90))
    assert infer_statistic(x, float(np.percentile(x, 90))) == "p90"
    assert infer_statistic(x, 12345.0) is None
    assert bootstrap_ci([3.0], "median") == (3.0, 3.0)
    with pytest.raises(ValueError, match="unknown statistic"):
        statistic_fn("p200")
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="zero"):
        ratio_ci([1.0, 2.0], [0.0, 0.0])
    # fixed seed: the same interval every time
    assert bootstrap_ci(x, "mean", seed=5) == bootstrap_ci(x, "mean", seed=5)

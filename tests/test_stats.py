"""The corrected resampled t-test and intervals, against hand computation and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from dropsweep.answers.stats import compare, corrected_se, holm, interval


def test_a_small_case_by_hand():
    # differences 1, 2, 3, 4 from 2 repeats of 2-fold CV: n = 4, mean 2.5, s^2 = 5/3,
    # correction 1/4 + 1/(2-1) = 5/4: se = sqrt(25/12), t = 2.5 / sqrt(25/12) = sqrt(3);
    # not accuracies, so not bounded
    result = compare([1, 2, 3, 4], [0, 0, 0, 0], folds=2, bounds=None)
    assert result.diff.mean == 2.5
    assert corrected_se([1, 2, 3, 4], 2) == pytest.approx(math.sqrt(25 / 12))
    assert result.t == pytest.approx(math.sqrt(3))
    # two-sided p of t = sqrt(3) with 3 degrees of freedom: 0.1817...
    assert result.p == pytest.approx(0.18169, abs=1e-4)
    assert result.p == pytest.approx(2 * scipy_stats.t.sf(math.sqrt(3), 3))
    # the interval: 2.5 +- t(0.975, 3) * sqrt(25/12) = 2.5 +- 3.1824 * 1.4434
    assert result.diff.low == pytest.approx(2.5 - 3.18245 * math.sqrt(25 / 12), abs=1e-4)
    assert result.diff.high == pytest.approx(2.5 + 3.18245 * math.sqrt(25 / 12), abs=1e-4)


def test_the_correction_is_more_conservative_than_the_naive_paired_t_test():
    rng = np.random.default_rng(0)
    base = rng.normal(0.85, 0.05, size=50)  # 5 x 10-fold
    better = base + rng.normal(0.01, 0.02, size=50)
    corrected = compare(better, base, folds=10)
    naive = scipy_stats.ttest_rel(better, base)
    assert corrected.p > naive.pvalue
    # the naive statistic shrunk by sqrt((1/n) / (1/n + 1/(k-1))), as the formula says
    assert corrected.t == pytest.approx(naive.statistic * math.sqrt((1 / 50) / (1 / 50 + 1 / 9)))


def test_interval_matches_scipy_with_the_corrected_scale():
    scores = [0.80, 0.86, 0.90, 0.78, 0.88, 0.84, 0.82, 0.91, 0.87, 0.79]
    est = interval(scores, folds=5)
    scale = math.sqrt((1 / 10 + 1 / 4) * np.var(scores, ddof=1))
    low, high = scipy_stats.t.interval(0.95, 9, loc=np.mean(scores), scale=scale)
    assert (est.low, est.high) == (pytest.approx(low), pytest.approx(high))
    assert est.mean == pytest.approx(np.mean(scores)) and est.n == 10


def test_degenerate_inputs():
    same = compare([0.8] * 6, [0.8] * 6, folds=3)
    assert same.diff.mean == 0 and same.t == 0 and same.p == 1
    always_better = compare([0.9] * 6, [0.8] * 6, folds=3)
    assert always_better.t == math.inf and always_better.p == 0
    one = interval([0.9], folds=10)
    assert one.mean == 0.9 and math.isnan(one.low) and math.isnan(one.high)
    with pytest.raises(ValueError, match="same folds"):
        compare([0.9, 0.8], [0.9], folds=2)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> the last
    # is raised to 0.06 (step-down: never below an earlier adjusted p)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_edge_cases():
    assert holm([]) == []
    assert holm([0.03]) == [0.03]  # m = 1: nothing to adjust
    assert holm([0.4, 0.5, 0.6]) == [1.0, 1.0, 1.0]  # capped at 1
    nan = holm([0.01, math.nan, 0.04])  # NaN stays NaN and is not one of the m tests
    assert nan[0] == pytest.approx(0.02) and math.isnan(nan[1]) and nan[2] == pytest.approx(0.04)
    assert all(math.isnan(p) for p in holm([math.nan, math.nan]))


def test_holm_keeps_the_order_of_the_raw_p_values_and_never_lowers_one():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = list(rng.uniform(0, 0.2, size=int(rng.integers(2, 9))))
        adjusted = holm(p)
        assert all(a >= raw for a, raw in zip(adjusted, p))
        ranked = sorted(range(len(p)), key=lambda i: p[i])
        assert all(adjusted[a] <= adjusted[b] for a, b in zip(ranked, ranked[1:]))
        assert all(a <= min(1.0, len(p) * raw) for a, raw in zip(adjusted, p))  # <= Bonferroni


def test_an_accuracy_interval_near_100_percent_stays_within_0_and_100():
    # 5 x 3-fold scores near 100%: mean +- t(0.975, 14) * sqrt((1/15 + 1/2) * s^2) reaches
    # past 1.0, where no accuracy lies; the interval is that one cut at 1.0
    scores = [1.0, 1.0, 0.9, 1.0, 1.0, 0.95, 1.0, 1.0, 1.0, 0.85, 1.0, 1.0, 0.95, 1.0, 1.0]
    mean = float(np.mean(scores))
    half = scipy_stats.t.ppf(0.975, 14) * math.sqrt((1 / 15 + 1 / 2) * np.var(scores, ddof=1))
    assert mean + half > 1.0  # the formula alone: the case the issue saw ("[78.57, 111.01]")
    est = interval(scores, folds=3)
    assert est.mean == pytest.approx(mean) and est.low == pytest.approx(mean - half)
    assert est.high == 1.0
    # and at the other end: accuracies near 0 are not below 0
    low = interval([1 - s for s in scores], folds=3)
    assert low.low == 0.0 and low.high == pytest.approx(1 - mean + half)


def test_a_difference_of_accuracies_stays_within_minus_and_plus_100_points():
    # a - b with a and b accuracies lies in [-1, 1], not in [0, 1]: a wide interval of a
    # mean difference of +0.5 is cut at +1 above and -1 below, its mean, t and p untouched
    a, b = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    d = np.subtract(a, b)
    mean, se = float(d.mean()), math.sqrt((1 / 6 + 1 / 2) * np.var(d, ddof=1))
    half = scipy_stats.t.ppf(0.975, 5) * se
    assert mean + half > 1.0 and mean - half < -1.0
    cmp = compare(a, b, folds=3)
    assert (cmp.diff.mean, cmp.diff.low, cmp.diff.high) == (pytest.approx(mean), -1.0, 1.0)
    assert cmp.t == pytest.approx(mean / se)
    assert cmp.p == pytest.approx(2 * scipy_stats.t.sf(mean / se, 5))
    # a narrow one is not cut, and a negative difference keeps its negative interval
    near = compare([0.9, 0.92, 0.91], [0.95, 0.96, 0.97], ratio=0.0)
    assert -1.0 < near.diff.low < near.diff.high < 0.0

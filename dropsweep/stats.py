"""Honest uncertainty for repeated k-fold cross-validation.

The R x k scores of a configuration are not independent: every training set shares most of
its rows with every other. Treating them as independent (a plain t-test or a naive
confidence interval) makes a lucky winner look significant. Nadeau and Bengio (2003,
"Inference for the Generalization Error", Machine Learning 52) correct the variance of the
mean by the test/train size ratio: var = (1/n + n_test/n_train) * s^2, with n = R*k scores
and n_test/n_train = 1/(k-1) for k folds; Bouckaert and Frank (2004) use it for repeated
k-fold with n - 1 degrees of freedom. Both the interval of one configuration's accuracy and
the paired comparison with the baseline (per-fold differences, same folds) use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its corrected ``level`` confidence interval, over ``n`` scores."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Comparison:
    """Paired per-fold differences a - b: their mean and interval, and the corrected
    resampled t-test (two-sided) of a zero mean difference."""

    diff: Interval
    t: float
    p: float


def corrected_se(scores: Sequence[float], folds: int) -> float:
    """Standard error of the mean of repeated k-fold scores, Nadeau-Bengio corrected."""
    x = np.asarray(scores, dtype=float)
    n = x.size
    if n < 2 or folds < 2:
        return math.nan
    return math.sqrt((1.0 / n + 1.0 / (folds - 1)) * float(np.var(x, ddof=1)))


def interval(scores: Sequence[float], folds: int, level: float = LEVEL) -> Interval:
    """Mean +- t(level, n-1) * corrected standard error."""
    x = np.asarray(scores, dtype=float)
    mean = float(x.mean()) if x.size else math.nan
    se = corrected_se(x, folds)
    if math.isnan(se):
        return Interval(mean, math.nan, math.nan, int(x.size))
    from scipy import stats  # half a second to import: only when a confirmation is read

    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1)) * se
    return Interval(mean, mean - half, mean + half, int(x.size))


def compare(a: Sequence[float], b: Sequence[float], folds: int,
            level: float = LEVEL) -> Comparison:
    """The corrected resampled t-test of ``a`` against ``b``, scored on the same folds
    (element i of each is the same repeat and fold)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need the same folds: {x.size} vs {y.size} scores")
    d = x - y
    diff = interval(d, folds, level)
    se = corrected_se(d, folds)
    if math.isnan(se):
        return Comparison(diff, math.nan, math.nan)
    if se == 0.0:  # identical differences on every fold
        t = 0.0 if diff.mean == 0.0 else math.copysign(math.inf, diff.mean)
    else:
        t = diff.mean / se
    from scipy import stats

    p = 1.0 if t == 0.0 else float(2.0 * stats.t.sf(abs(t), d.size - 1))
    return Comparison(diff, t, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order.

    Comparing every pair of several set-ups makes some pair look significant by chance;
    Holm (1979) controls the chance of any false finding at the nominal level without
    assuming the tests independent, and never rejects less than Bonferroni. NaN (a test
    that could not be computed) stays NaN and is not counted among the m tests."""
    order = sorted((i for i, p in enumerate(p_values) if not math.isnan(p)),
                   key=lambda i: p_values[i])
    m = len(order)
    out = [math.nan] * len(p_values)
    running = 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * float(p_values[i])))
        out[i] = running
    return out

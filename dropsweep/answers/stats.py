"""Honest uncertainty for repeated k-fold cross-validation.

The R x k scores of a configuration are not independent: every training set shares most of
its rows with every other. Treating them as independent (a plain t-test or a naive
confidence interval) makes a lucky winner look significant. Nadeau and Bengio (2003,
"Inference for the Generalization Error", Machine Learning 52) correct the variance of the
mean by the test/train size ratio: var = (1/n + n_test/n_train) * s^2, with n = R*k scores
and n_test/n_train = 1/(k-1) for k folds; Bouckaert and Frank (2004) use it for repeated
k-fold with n - 1 degrees of freedom. Both the interval of one configuration's accuracy and
the paired comparison with the baseline (per-fold differences, same folds) use it. Their
correction holds for any train/test split, so a repeated hold-out (validation) split uses
its measured n_validation / n_train instead of 1/(k-1).

The scores are accuracies, fractions in [0, 1], and a t interval knows nothing of that: near
100% it reaches past it ("[78.57, 111.01]"). The interval is the t interval intersected with
the values the quantity can take ([0, 1] for an accuracy, [-1, 1] for a difference of two),
which covers the true value exactly as often, since that value always lies there; the mean,
t and p are the formula's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LEVEL = 0.95
ACCURACY = (0.0, 1.0)  # the values an accuracy can take: what the intervals are cut to


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


def test_train_ratio(folds: int | None, ratio: float | None = None) -> float:
    """n_test / n_train of one split: ``ratio`` as measured (a hold-out split), else k-fold's
    1/(k-1); NaN where there is none (one fold)."""
    if ratio is not None:
        return float(ratio)
    return 1.0 / (folds - 1) if folds is not None and folds >= 2 else math.nan


def corrected_se(scores: Sequence[float], folds: int | None = None, *,
                 ratio: float | None = None) -> float:
    """Standard error of the mean of repeated k-fold (or repeated hold-out) scores,
    Nadeau-Bengio corrected with the splits' test/train ratio."""
    x = np.asarray(scores, dtype=float)
    n = x.size
    r = test_train_ratio(folds, ratio)
    if n < 2 or math.isnan(r):
        return math.nan
    return math.sqrt((1.0 / n + r) * float(np.var(x, ddof=1)))


def interval(scores: Sequence[float], folds: int | None = None, level: float = LEVEL, *,
             ratio: float | None = None,
             bounds: tuple[float, float] | None = ACCURACY) -> Interval:
    """Mean +- t(level, n-1) * corrected standard error, cut to ``bounds`` (the values the
    scores' true mean can take; None: any)."""
    x = np.asarray(scores, dtype=float)
    mean = float(x.mean()) if x.size else math.nan
    se = corrected_se(x, folds, ratio=ratio)
    if math.isnan(se):
        return Interval(mean, math.nan, math.nan, int(x.size))
    from scipy import stats  # half a second to import: only when a confirmation is read

    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1)) * se
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, int(x.size))


def compare(a: Sequence[float], b: Sequence[float], folds: int | None = None,
            level: float = LEVEL, *, ratio: float | None = None,
            bounds: tuple[float, float] | None = ACCURACY) -> Comparison:
    """The corrected resampled t-test of ``a`` against ``b``, scored on the same folds
    (element i of each is the same repeat and fold); ``bounds``: those of each score, so
    the difference's interval is cut to [low - high, high - low]."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need the same folds: {x.size} vs {y.size} scores")
    d = x - y
    diff = interval(d, folds, level, ratio=ratio, bounds=None if bounds is None else
                    (bounds[0] - bounds[1], bounds[1] - bounds[0]))
    se = corrected_se(d, folds, ratio=ratio)
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

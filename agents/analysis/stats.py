"""The statistics of the judge, ported from Kayenta's NetflixACAJudge (pure, numpy/scipy).

* :func:`iqr_keep` — Kayenta's ``IQRDetector(factor, reduceSensitivity=true)``: a value is an
  outlier when it is outside both ``[Q1 - f·IQR, Q3 + f·IQR]`` and ``[P1, P99]``.
* :func:`shift_interval` — Kayenta's ``MannWhitney.mannWhitneyUTest``: the Hodges-Lehmann
  estimate of the shift ``canary - baseline`` and its confidence interval, found as R's
  ``wilcox.test(conf.int=TRUE, exact=FALSE, correct=TRUE)`` finds them (roots of the
  tie-corrected normal approximation of the rank-sum statistic).
* :func:`effect_size` — mean ratio (Kayenta's default), median ratio or the common-language
  effect size.
* :func:`robust_z` — ``(value - median) / MAD`` (MAD scaled to the normal's sigma) for
  single-host checks against the host's own pre-patch window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from patchpilot.core.policy import EffectSizeMeasure

__all__ = [
    "MannWhitney",
    "ShiftInterval",
    "clean",
    "effect_size",
    "iqr_keep",
    "mann_whitney",
    "robust_z",
    "shift_interval",
]

Array = NDArray[np.float64]


def clean(values: Sequence[float]) -> tuple[Array, int]:
    """``values`` without NaN and infinities, and how many were dropped."""
    data = np.asarray(values, dtype=np.float64)
    finite = data[np.isfinite(data)]
    return finite, int(data.size - finite.size)


def iqr_keep(data: Array, factor: float = 3.0) -> Array:
    """The values of ``data`` that Kayenta's reduced-sensitivity IQR detector keeps."""
    if data.size < 2:
        return data
    p01, q1, q3, p99 = np.percentile(data, [1, 25, 75, 99])
    iqr = q3 - q1
    lower = min(p01, q1 - factor * iqr)
    upper = max(p99, q3 + factor * iqr)
    kept: Array = data[(data >= lower) & (data <= upper)]
    return kept


@dataclass(frozen=True)
class ShiftInterval:
    """The Hodges-Lehmann shift of ``x`` against ``y`` and its confidence interval."""

    estimate: float
    low: float
    high: float


def _rank_statistic(mu: float, x: Array, y: Array, quantile: float) -> float:
    """Kayenta's ``wilcoxonDiff``: standardised rank sum of ``x - mu`` minus ``quantile``."""
    from scipy import stats  # imported where used: scipy costs ~0.7 s

    nx, ny = float(x.size), float(y.size)
    ranks = stats.rankdata(np.concatenate([x - mu, y]))
    dz = float(ranks[: x.size].sum()) - nx * (nx + 1) / 2 - nx * ny / 2
    _, ties = np.unique(ranks, return_counts=True)
    tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties)) / ((nx + ny) * (nx + ny - 1))
    sigma = math.sqrt((nx * ny / 12) * ((nx + ny + 1) - tie_term))
    if sigma == 0:
        raise ValueError("cannot compute the interval when all observations are tied")
    correction = math.copysign(0.5, dz) if dz != 0 else 0.0
    return (dz - correction) / sigma - quantile


def _root(x: Array, y: Array, quantile: float, lo: float, hi: float, clamp: bool) -> float:
    from scipy import optimize  # imported where used: scipy costs ~0.7 s

    f_lo = _rank_statistic(lo, x, y, quantile)
    f_hi = _rank_statistic(hi, x, y, quantile)
    if clamp and f_lo <= 0:
        return lo
    if clamp and f_hi >= 0:
        return hi
    if f_lo * f_hi > 0:  # no sign change (only when not clamping): the nearer end
        return lo if abs(f_lo) < abs(f_hi) else hi
    xtol = max(hi - lo, 1.0) * 1e-10
    root: float = optimize.brentq(_rank_statistic, lo, hi, args=(x, y, quantile), xtol=xtol)
    return root


def shift_interval(x: Array, y: Array, confidence: float) -> ShiftInterval:
    """Hodges-Lehmann estimate of the shift ``x - y`` and its ``confidence`` interval.

    Both samples constant (Kayenta adds a little noise there): the shift is known exactly.

    Raises:
        ValueError: a sample is empty, or every observation is the same value.
    """
    from scipy import stats  # imported where used: scipy costs ~0.7 s

    if x.size == 0 or y.size == 0:
        raise ValueError("both samples need data")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        if x[0] == y[0]:
            raise ValueError("cannot compute the interval when all observations are tied")
        shift = float(x[0] - y[0])
        return ShiftInterval(shift, shift, shift)
    lo = float(x.min() - y.max())
    hi = float(x.max() - y.min())
    z = float(stats.norm.ppf((1 - confidence) / 2))  # negative
    return ShiftInterval(
        estimate=_root(x, y, 0.0, lo, hi, clamp=False),
        low=_root(x, y, -z, lo, hi, clamp=True),
        high=_root(x, y, z, lo, hi, clamp=True),
    )


@dataclass(frozen=True)
class MannWhitney:
    """Two-sided Mann-Whitney U of the canary against the baseline."""

    statistic: float
    p_value: float


def mann_whitney(canary: Array, baseline: Array) -> MannWhitney:
    """``scipy.stats.mannwhitneyu(canary, baseline, alternative="two-sided")``."""
    from scipy import stats  # imported where used: scipy costs ~0.7 s

    result = stats.mannwhitneyu(canary, baseline, alternative="two-sided")
    return MannWhitney(float(result.statistic), float(result.pvalue))


def effect_size(canary: Array, baseline: Array, measure: EffectSizeMeasure) -> float:
    """The canary's effect against the baseline (``nan`` when a ratio's denominator is 0)."""
    from scipy import stats  # imported where used: scipy costs ~0.7 s

    if measure is EffectSizeMeasure.CLES:
        ranks = stats.rankdata(np.concatenate([canary, baseline]))
        m, n = float(canary.size), float(baseline.size)
        return float((2 * ranks[: canary.size].sum() - m * (m + 1)) / (2 * n * m))
    if measure is EffectSizeMeasure.MEDIAN_RATIO:
        top, bottom = float(np.median(canary)), float(np.median(baseline))
    else:
        top, bottom = float(np.mean(canary)), float(np.mean(baseline))
    if top == 0 or bottom == 0:
        return math.nan
    return top / bottom


def robust_z(series: Sequence[float], value: float) -> float | None:
    """How many robust standard deviations ``value`` is from ``series``' median.

    ``(value - median) / MAD`` with the MAD scaled to the normal's sigma
    (``scipy.stats.median_abs_deviation(scale="normal")``); NaN and infinite samples are
    dropped. ``None`` without data; with a MAD of 0 (a constant series) it is 0 for the median
    itself and ±infinity for anything else.
    """
    from scipy import stats  # imported where used: scipy costs ~0.7 s

    data, _ = clean(series)
    if data.size == 0 or not math.isfinite(value):
        return None
    median = float(np.median(data))
    mad = float(stats.median_abs_deviation(data, scale="normal"))
    if mad == 0:
        return 0.0 if value == median else math.copysign(math.inf, value - median)
    return (value - median) / mad

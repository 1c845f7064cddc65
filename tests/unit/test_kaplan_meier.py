"""The Kaplan-Meier estimate of patchpilot/core/sla.py against a hand-checked case and against
scipy's (``scipy.stats.ecdf`` of right-censored data) on synthetic histories with censoring."""

from __future__ import annotations

import random

import pytest
from scipy import stats

from patchpilot.core.sla import KMPoint, kaplan_meier, km_median


def test_a_hand_checked_case_with_censoring_and_ties() -> None:
    # seven items: fixed after 1, 3, 3 and 6 days; still open at 2, 3 and 8 days
    durations = [1.0, 2.0, 3.0, 3.0, 3.0, 6.0, 8.0]
    fixed = [True, False, True, True, False, True, False]
    curve = kaplan_meier(durations, fixed)
    s1 = 6 / 7  # 1 of 7 at risk fixed
    s3 = s1 * (1 - 2 / 5)  # at 3 days 5 at risk (one censored at 2), 2 fixed
    s6 = s3 * (1 - 1 / 2)  # at 6 days 2 at risk (one censored at 3), 1 fixed
    assert curve == [
        KMPoint(0.0, 1.0, 7, 0, 0),
        KMPoint(1.0, pytest.approx(s1), 7, 1, 0),
        KMPoint(2.0, pytest.approx(s1), 6, 0, 1),
        KMPoint(3.0, pytest.approx(s3), 5, 2, 1),
        KMPoint(6.0, pytest.approx(s6), 2, 1, 0),
        KMPoint(8.0, pytest.approx(s6), 1, 0, 1),
    ]
    assert km_median(curve) == 6.0  # 0.514 at 3 days, 0.257 at 6


def test_open_items_are_censored_not_dropped() -> None:
    # dropping the open items would say half are fixed within a day; they were all at risk
    curve = kaplan_meier(
        [1.0, 1.0, 10.0, 10.0, 10.0, 10.0], [True, True, False, False, False, False]
    )
    assert curve[1].survival == pytest.approx(4 / 6)
    assert km_median(curve) is None  # never reaches one half
    assert kaplan_meier([], []) == [KMPoint(0.0, 1.0, 0, 0, 0)]


@pytest.mark.parametrize("seed", range(8))
def test_equals_scipy_on_synthetic_histories(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(5, 300)
    durations = [
        float(rng.randint(0, 120)) if rng.random() < 0.5 else rng.expovariate(1 / 40)
        for _ in range(n)
    ]
    fixed = [rng.random() < 0.7 for _ in range(n)]
    if not any(fixed):
        fixed[0] = True
    curve = kaplan_meier(durations, fixed)
    reference = stats.ecdf(
        stats.CensoredData(
            uncensored=[d for d, f in zip(durations, fixed, strict=True) if f],
            right=[d for d, f in zip(durations, fixed, strict=True) if not f],
        )
    ).sf
    times = [p.days for p in curve]
    expected = reference.evaluate(times)
    for point, value in zip(curve, expected, strict=True):
        assert point.survival == pytest.approx(float(value), abs=1e-12), point
    assert sum(p.fixed for p in curve) == sum(fixed)
    assert sum(p.censored for p in curve) == n - sum(fixed)
    assert curve[0].at_risk == n


@pytest.mark.parametrize(
    ("durations", "fixed", "problem"),
    [
        ([1.0], [True, False], "same length"),
        ([-1.0], [True], "not negative"),
        ([float("nan")], [True], "finite"),
    ],
)
def test_refuses_bad_input(durations: list[float], fixed: list[bool], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        kaplan_meier(durations, fixed)

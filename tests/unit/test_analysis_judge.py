"""The post-patch judge (Kayenta's NetflixACAJudge, deterministic) on series with known answers.

Synthetic series: shifted, noisy, heavy-tailed, empty, constant, with NaNs; Kayenta's edge
cases (no data, all equal, identical); the score, the verdict and its reason; robust z-scores;
and hypothesis properties (identical passes, far worse fails, far better passes, no data never
passes). Everything is seeded: no test depends on chance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from patchpilot.agents.analysis import (
    AnalysisVerdict,
    Classification,
    Verdict,
    classify_metric,
    effect_size,
    iqr_keep,
    judge,
    robust_z,
    shift_interval,
)
from patchpilot.core.policy import (
    AnalysisPolicy,
    EffectSizeMeasure,
    HostMetric,
    HttpMetric,
    Policy,
    PrometheusMetric,
)

URL = "http://{host}:8080/"


def _policy(*metrics: dict[str, Any], **fields: Any) -> AnalysisPolicy:
    return AnalysisPolicy.model_validate(
        {"enabled": True, "metrics": list(metrics) or [_latency()], **fields}
    )


def _latency(**fields: Any) -> dict[str, Any]:
    return {"provider": "http", "name": "latency", "url": URL, "critical": True, **fields}


def _errors(**fields: Any) -> dict[str, Any]:
    return {
        "provider": "http",
        "name": "error_rate",
        "url": URL,
        "measure": "error",
        "critical": True,
        "fail_above": 0.5,
        "failure_limit": 1,
        **fields,
    }


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def _lognormal(median: float, n: int = 80, seed: int = 7, sigma: float = 0.3) -> list[float]:
    return [float(v) for v in _rng(seed).lognormal(math.log(median), sigma, n)]


def _one(policy: AnalysisPolicy, baseline: list[float], canary: list[float]) -> AnalysisVerdict:
    name = policy.metrics[0].name
    return judge({name: baseline}, {name: canary}, policy.metrics, policy)


# --- the statistics --------------------------------------------------------------------------


def test_hodges_lehmann_estimate_is_the_median_of_pairwise_differences() -> None:
    x = np.array(_lognormal(10.0, 40, seed=1))
    y = np.array(_lognormal(8.0, 50, seed=2))
    interval = shift_interval(x, y, 0.98)
    pairwise = np.subtract.outer(x, y).ravel()
    # The root of the rank statistic sits within one pairwise difference of their median.
    gaps = np.sort(pairwise)
    position = np.searchsorted(gaps, interval.estimate)
    assert abs(position - gaps.size / 2) <= 2
    assert interval.low < interval.estimate < interval.high
    # Wider at a higher confidence.
    wider = shift_interval(x, y, 0.999)
    assert wider.low <= interval.low
    assert wider.high >= interval.high


def test_shift_interval_of_two_constants_is_exact_and_all_tied_refuses() -> None:
    assert shift_interval(np.array([5.0, 5.0]), np.array([2.0, 2.0, 2.0]), 0.98).estimate == 3.0
    with pytest.raises(ValueError, match="tied"):
        shift_interval(np.array([1.0, 1.0]), np.array([1.0]), 0.98)
    with pytest.raises(ValueError, match="need data"):
        shift_interval(np.array([]), np.array([1.0]), 0.98)


def test_iqr_detector_keeps_the_bulk_and_drops_far_outliers() -> None:
    data = np.array([*([1.0] * 50), *np.linspace(1.0, 2.0, 149), 1000.0])
    kept = iqr_keep(data, 3.0)
    assert 1000.0 not in kept
    assert kept.size == data.size - 1
    # Reduced sensitivity: nothing inside [P1, P99] is ever dropped.
    spread = np.linspace(0.0, 1.0, 101)
    assert iqr_keep(spread, 3.0).size == 101


def test_effect_sizes() -> None:
    base, can = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])
    assert effect_size(can, base, EffectSizeMeasure.MEAN_RATIO) == pytest.approx(2.0)
    assert effect_size(can, base, EffectSizeMeasure.MEDIAN_RATIO) == pytest.approx(2.0)
    assert effect_size(base, base, EffectSizeMeasure.CLES) == pytest.approx(0.5)
    assert effect_size(base + 10, base, EffectSizeMeasure.CLES) == pytest.approx(1.0)
    assert math.isnan(effect_size(can, np.zeros(3), EffectSizeMeasure.MEAN_RATIO))


def test_robust_z() -> None:
    series = [10.0, 11.0, 9.0, 10.5, 9.5, 10.0, 50.0]
    assert robust_z(series, 10.0) == pytest.approx(0.0)
    # MAD of the series is 0.5 -> scaled 0.5 * 1.4826.
    assert robust_z(series, 12.0) == pytest.approx(2.0 / (0.5 * 1.482602218505602))
    assert robust_z(series, 8.0) == pytest.approx(-2.0 / (0.5 * 1.482602218505602))
    assert robust_z([], 1.0) is None
    assert robust_z([math.nan, math.nan], 1.0) is None
    assert robust_z([3.0, 3.0, math.nan], 3.0) == 0.0
    assert robust_z([3.0, 3.0], 4.0) == math.inf
    assert robust_z([3.0, 3.0], 2.0) == -math.inf


# --- one metric ------------------------------------------------------------------------------


def test_latency_five_times_slower_fails_with_the_evidence() -> None:
    policy = _policy()
    verdict = _one(policy, _lognormal(0.002, seed=1), _lognormal(0.010, seed=2))
    assert verdict.verdict is Verdict.FAIL
    assert verdict.score == 0.0
    [metric] = verdict.metrics
    assert metric.classification is Classification.HIGH
    assert metric.critical_failure
    assert metric.p_value is not None
    assert metric.p_value < 1e-10
    assert metric.statistic is not None
    assert metric.statistic > 80 * 80 * 0.9
    assert metric.effect_size == pytest.approx(5.0, rel=0.2)
    assert metric.ci_low is not None
    assert metric.ci_low > 0
    assert metric.baseline.n == 80
    assert metric.canary.n == 80
    assert metric.canary.median == pytest.approx(0.010, rel=0.15)
    assert metric.canary.p95 is not None
    assert metric.canary.p95 > metric.canary.median
    assert verdict.reason.startswith("analysis failed: latency p50 ")
    assert "x baseline (p=" in verdict.reason
    assert verdict.failing == ["latency"]


def test_shift_in_the_better_direction_passes_and_either_catches_both() -> None:
    base, faster = _lognormal(0.010, seed=1), _lognormal(0.002, seed=2)
    assert _one(_policy(), base, faster).verdict is Verdict.PASS
    either = _policy(_latency(direction="either"))
    result = _one(either, base, faster)
    assert result.verdict is Verdict.FAIL
    assert result.metrics[0].classification is Classification.LOW
    decrease = _policy(_latency(direction="decrease"))
    assert _one(decrease, base, faster).metrics[0].classification is Classification.LOW
    assert _one(decrease, faster, base).verdict is Verdict.PASS


def test_noisy_series_of_the_same_distribution_pass() -> None:
    policy = _policy()
    for seed in range(10):
        verdict = _one(policy, _lognormal(0.002, seed=seed), _lognormal(0.002, seed=seed + 100))
        assert verdict.verdict is Verdict.PASS, verdict.reason


def test_heavy_tailed_series_without_a_shift_pass_and_with_one_fail() -> None:
    policy = _policy()
    rng = _rng(3)
    base = [float(v) for v in (rng.pareto(1.5, 200) + 1) * 0.01]
    same = [float(v) for v in (rng.pareto(1.5, 200) + 1) * 0.01]
    assert _one(policy, base, same).verdict is Verdict.PASS
    slower = [v * 4 for v in same]
    assert _one(policy, base, slower).verdict is Verdict.FAIL


def test_small_but_significant_shift_passes_under_an_effect_size_threshold() -> None:
    base, canary = _lognormal(0.002, 400, seed=1), _lognormal(0.0023, 400, seed=2)
    strict = _one(_policy(), base, canary)
    assert strict.metrics[0].classification is Classification.HIGH  # Kayenta's default
    lenient = _policy(_latency(effect_size={"measure": "median_ratio", "allowed_increase": 1.5}))
    assert _one(lenient, base, canary).verdict is Verdict.PASS
    # High but below the critical threshold: counted in the score, not an outright fail.
    graded = _policy(
        _latency(effect_size={"allowed_increase": 1.05, "critical_increase": 2.0}),
        {**_latency(name="other"), "critical": False},
    )
    verdict = judge(
        {"latency": base, "other": base}, {"latency": canary, "other": base}, graded.metrics, graded
    )
    assert verdict.metrics[0].classification is Classification.HIGH
    assert not verdict.metrics[0].critical_failure
    assert verdict.score == 50.0
    assert verdict.verdict is Verdict.FAIL


def test_min_shift_is_an_absolute_floor_under_any_ratio() -> None:
    # 2 ms -> 4 ms: a 2x ratio and very significant, but 2 ms is below a 50 ms floor
    base, canary = _lognormal(0.002, 200, seed=1), _lognormal(0.004, 200, seed=2)
    plain = _policy(_latency(effect_size={"measure": "median_ratio", "allowed_increase": 1.5}))
    assert _one(plain, base, canary).verdict is Verdict.FAIL
    floored = _policy(
        _latency(
            effect_size={"measure": "median_ratio", "allowed_increase": 1.5, "min_shift": 0.05}
        )
    )
    calm = _one(floored, base, canary)
    assert calm.verdict is Verdict.PASS
    assert calm.metrics[0].classification is Classification.PASS
    assert "below min_shift 0.05" in calm.metrics[0].reason
    # 2 ms -> 200 ms (acme-web 1.3.0) is far above the floor: still a critical failure
    slow = _one(floored, base, _lognormal(0.2, 200, seed=3))
    assert slow.metrics[0].classification is Classification.HIGH
    assert slow.metrics[0].critical_failure
    assert slow.verdict is Verdict.FAIL
    with pytest.raises(ValidationError):
        _policy(_latency(effect_size={"min_shift": -1}))


def test_kayenta_edge_cases_identical_all_equal_constant_and_nans() -> None:
    policy = _policy()
    base = _lognormal(0.002, seed=1)
    identical = _one(policy, base, list(reversed(base)))
    assert identical.verdict is Verdict.PASS
    assert identical.metrics[0].reason == "the canary and baseline data are identical"
    equal = _one(policy, [0.5] * 60, [0.5] * 70)
    assert equal.verdict is Verdict.PASS
    assert equal.metrics[0].reason == "every sample has the same value"
    # Two different constants: the shift is known exactly.
    constant = _one(policy, [0.5] * 60, [0.7] * 60)
    assert constant.metrics[0].classification is Classification.HIGH
    assert constant.metrics[0].estimate == pytest.approx(0.2)
    # NaNs are dropped (and counted); what is left is judged.
    with_nans = _one(policy, [*base, math.nan, math.inf], [*reversed(base), math.nan])
    assert with_nans.verdict is Verdict.PASS
    assert with_nans.metrics[0].baseline.nan_dropped == 2
    assert with_nans.metrics[0].canary.nan_dropped == 1
    all_nan = _one(policy, base, [math.nan] * 60)
    assert all_nan.verdict is Verdict.NODATA
    assert all_nan.metrics[0].canary.n == 0
    assert all_nan.metrics[0].canary.nan_dropped == 60


def test_no_data_or_too_few_samples_is_nodata_never_pass() -> None:
    policy = _policy()
    base = _lognormal(0.002, seed=1)
    empty = judge({}, {}, policy.metrics, policy, nodata_reasons={"latency": "connect refused"})
    assert empty.verdict is Verdict.NODATA
    assert empty.metrics[0].classification is Classification.NODATA
    assert "connect refused" in empty.metrics[0].reason
    assert empty.reason == "analysis nodata: latency no data"
    few = _one(policy, base, base[:49])
    assert few.verdict is Verdict.NODATA
    assert "need 50" in few.metrics[0].reason
    # One metric of two without data holds a passing score at nodata.
    two = _policy(_latency(), {**_latency(name="cpu"), "critical": False})
    verdict = judge({"latency": base, "cpu": base}, {"latency": base}, two.metrics, two)
    assert verdict.score == 100.0
    assert verdict.verdict is Verdict.NODATA
    # Unless that metric is optional (Kayenta leaves it out of the score)...
    lenient = _policy(
        _latency(),
        {**_latency(name="mem"), "critical": False},
        {**_latency(name="cpu"), "critical": False, "optional": True},
    )
    full = {"latency": base, "mem": base, "cpu": base}
    partial = {"latency": base, "mem": base}
    assert judge(full, partial, lenient.metrics, lenient).verdict is Verdict.PASS
    # ... and fewer than half of the metrics lack data (Kayenta's NODATA_THRESHOLD).
    assert judge(full, {"latency": base}, lenient.metrics, lenient).verdict is Verdict.NODATA
    # must_have_data: no data is a failed metric (NodataFailMetric), counted in the score.
    required = _policy(
        _latency(), {**_latency(name="cpu"), "critical": False, "must_have_data": True}
    )
    verdict = judge({"latency": base, "cpu": base}, {"latency": base}, required.metrics, required)
    assert verdict.metrics[1].classification is Classification.NODATA_FAIL
    assert verdict.score == 50.0
    assert verdict.verdict is Verdict.FAIL
    assert judge({}, {}, [], policy).verdict is Verdict.NODATA


def test_error_rate_failure_condition_and_limit() -> None:
    policy = _policy(_errors())
    clean = [0.0] * 60
    two = [0.0] * 58 + [1.0, 1.0]
    one = [0.0] * 59 + [1.0]
    failed = _one(policy, clean, two)
    assert failed.verdict is Verdict.FAIL
    metric = failed.metrics[0]
    assert (metric.classification, metric.failed_measurements) == (Classification.HIGH, 2)
    assert metric.canary.mean == pytest.approx(2 / 60)
    assert failed.reason == (
        "analysis failed: error_rate 3.3 % vs 0.0 % (2 of 60 samples past fail_above)"
    )
    assert _one(policy, clean, one).verdict is Verdict.PASS  # within the failure limit
    # The condition needs no baseline: with canary samples only it decides alone.
    alone = judge({}, {"error_rate": [*two[-10:], 1.0]}, policy.metrics, policy)
    assert alone.verdict is Verdict.FAIL
    quiet = judge({}, {"error_rate": clean[:5]}, policy.metrics, policy)
    assert quiet.verdict is Verdict.PASS
    assert "too few samples to compare" in quiet.metrics[0].reason


def test_the_contract_reason_names_every_failing_metric() -> None:
    policy = _policy(_latency(), _errors())
    verdict = judge(
        {"latency": _lognormal(0.002, 60, seed=1), "error_rate": [0.0] * 60},
        {"latency": _lognormal(0.2, 60, seed=2), "error_rate": [0.0] * 57 + [1.0] * 3},
        policy.metrics,
        policy,
    )
    assert verdict.verdict is Verdict.FAIL
    assert verdict.reason.startswith("analysis failed: latency p50 ")
    assert "error_rate 5.0 % vs 0.0 %" in verdict.reason
    assert verdict.failing == ["latency", "error_rate"]
    document = verdict.model_dump(mode="json")
    assert document["verdict"] == "fail"
    assert document["score"] == 0.0
    for metric in document["metrics"]:
        assert {"name", "classification", "baseline", "canary", "p_value"} <= set(metric)
        assert {"n", "median", "mean", "p95"} <= set(metric["baseline"])
    # Strict JSON: no NaN or infinity anywhere.
    assert "NaN" not in verdict.model_dump_json()
    assert "Infinity" not in verdict.model_dump_json()


def test_group_weights_and_marginal() -> None:
    base = _lognormal(0.002, seed=1)
    worse = _lognormal(0.01, seed=2)
    metrics = [
        {**_latency(name=f"m{i}"), "critical": False, "group": "web" if i < 4 else "host"}
        for i in range(5)
    ]
    baseline = {f"m{i}": base for i in range(5)}
    # One failing metric of four in "web" (75), "host" passes (100).
    canary = {**baseline, "m0": worse}
    equal = _policy(*metrics)
    verdict = judge(baseline, canary, equal.metrics, equal)
    assert [(g.name, g.score, g.weight) for g in verdict.groups] == [
        ("web", 75.0, 50.0),
        ("host", 100.0, 50.0),
    ]
    assert verdict.score == 87.5
    assert verdict.verdict is Verdict.MARGINAL
    assert verdict.reason.startswith("analysis marginal: score 87.5: m0 p50 ")
    weighted = _policy(*metrics, group_weights={"web": 80})
    verdict = judge(baseline, canary, weighted.metrics, weighted)
    assert verdict.score == 80.0
    assert verdict.verdict is Verdict.MARGINAL
    low_marginal = _policy(*metrics, group_weights={"web": 80}, marginal_score=85)
    assert judge(baseline, canary, low_marginal.metrics, low_marginal).verdict is Verdict.FAIL
    assert judge(baseline, baseline, weighted.metrics, weighted).reason == (
        "analysis passed: score 100.0"
    )


def test_outliers_keep_versus_remove() -> None:
    # One far value in 200 is beyond both Q3 + 3 IQR and P99: removed.
    base = [1.0 + 0.01 * (i % 10) for i in range(200)]
    canary = [*base[:199], 500.0]
    removed = _one(_policy(_latency(unit="count")), base, canary)
    assert removed.metrics[0].canary.outliers_removed == 1
    assert removed.metrics[0].canary.max == pytest.approx(1.09)
    assert removed.verdict is Verdict.PASS
    kept = _one(_policy(_latency(unit="count"), outliers="keep"), base, canary)
    assert kept.metrics[0].canary.outliers_removed == 0


def test_classify_metric_for_every_provider_kind() -> None:
    policy = _policy()
    base, worse = _lognormal(10, seed=1), _lognormal(40, seed=2)
    for spec in (
        HostMetric(name="load", signal="load1"),
        PrometheusMetric(name="p99", base_url="http://prom:9090", promql="up"),
        HttpMetric(name="lat", url=URL),
    ):
        result = classify_metric(spec, base, worse, policy)
        assert (result.provider, result.classification) == (spec.provider, Classification.HIGH)


# --- the policy section ----------------------------------------------------------------------


def test_analysis_section_defaults_off_and_validates() -> None:
    section = AnalysisPolicy()
    assert not section.enabled
    assert section.metrics == ()
    assert (section.confidence, section.pass_score, section.marginal_score) == (0.98, 95, 75)
    assert (section.min_samples, section.outlier_factor, section.tolerance) == (50, 3.0, 0.25)
    assert section.baseline == "peers"
    assert section.baseline_fallback == "self"
    bad: list[dict[str, Any]] = [
        {"enabled": True},
        {"metrics": [_latency(), _latency()]},
        {"metrics": [{"name": "x", "url": URL}]},
        {"metrics": [_latency(url="http://{port}/")]},
        {"metrics": [_latency(url="ftp://{host}/")]},
        {"metrics": [_latency(name="bad name")]},
        {"metrics": [_latency(fail_above=1, fail_below=2)]},
        {
            "metrics": [
                {"provider": "host", "name": "j", "signal": "journal_errors", "units": ["-x"]}
            ]
        },
        {
            "metrics": [
                {"provider": "prometheus", "name": "p", "base_url": "http://p/?q", "promql": "up"}
            ]
        },
        {"marginal_score": 96},
        {"group_weights": {"a": 60, "b": 50}},
        {"baseline": "self", "baseline_fallback": "self"},
        {"confidence": 1.0},
        {"surprise": 1},
    ]
    for data in bad:
        with pytest.raises(ValidationError):
            AnalysisPolicy.model_validate(data)


def test_metrics_for_selects_by_host_tag_and_package() -> None:
    from patchpilot.core.models import Host

    section = _policy(
        _latency(),
        {**_latency(name="web_only"), "tags": ["web"]},
        {**_latency(name="acme"), "packages": ["acme-*"]},
        {**_latency(name="db1"), "hosts": ["db-*"]},
    )
    web = Host(name="web-1", address="10.0.0.1", tags=frozenset({"web"}))
    db = Host(name="db-1", address="10.0.0.2", tags=frozenset({"db"}))
    assert [m.name for m in section.metrics_for(web, ["acme-web"])] == [
        "latency",
        "web_only",
        "acme",
    ]
    assert [m.name for m in section.metrics_for(db, ["openssl"])] == ["latency", "db1"]


def test_policy_has_the_section() -> None:
    fields = Policy.model_fields
    assert "analysis" in fields
    assert fields["analysis"].default_factory is AnalysisPolicy


# --- properties ------------------------------------------------------------------------------

_values = st.lists(
    st.floats(min_value=1.0, max_value=100.0, allow_nan=False), min_size=50, max_size=120
)


@settings(max_examples=40, deadline=None)
@given(_values, st.randoms(use_true_random=False))
def test_property_identical_distributions_pass(values: list[float], rnd: Any) -> None:
    canary = list(values)
    rnd.shuffle(canary)
    verdict = _one(_policy(), values, canary)
    assert verdict.verdict is Verdict.PASS


@settings(max_examples=40, deadline=None)
@given(_values, st.sampled_from(["increase", "either"]))
def test_property_far_worse_fails(values: list[float], direction: str) -> None:
    verdict = _one(_policy(_latency(direction=direction)), values, [v + 1000 for v in values])
    assert verdict.verdict is Verdict.FAIL
    assert verdict.reason.startswith("analysis failed: latency")


@settings(max_examples=40, deadline=None)
@given(_values)
def test_property_far_better_passes(values: list[float]) -> None:
    verdict = _one(_policy(), [v + 1000 for v in values], values)
    assert verdict.verdict is Verdict.PASS


@settings(max_examples=40, deadline=None)
@given(
    _values,
    st.lists(st.booleans(), min_size=3, max_size=3).filter(any),
    st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_property_no_data_never_passes(
    values: list[float], missing: list[bool], critical: list[bool]
) -> None:
    specs = [{**_latency(name=f"m{i}"), "critical": critical[i]} for i in range(3)]
    policy = _policy(*specs)
    baseline = {f"m{i}": values for i in range(3)}
    canary = {f"m{i}": ([] if missing[i] else list(values)) for i in range(3)}
    verdict = judge(baseline, canary, policy.metrics, policy)
    assert verdict.verdict is not Verdict.PASS

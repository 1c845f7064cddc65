"""The post-patch judge: Kayenta's NetflixACAJudge, deterministic, without an LLM.

Per metric (:func:`classify_metric`):

1. NaN and infinite samples are dropped on both sides.
2. **Failure conditions** (Argo-like, optional): each canary sample above ``fail_above`` (below
   ``fail_below``) is a failed measurement; more than ``failure_limit`` of them classify the
   metric High (Low), whatever the comparison says.
3. Fewer than ``min_samples`` on either side: ``Nodata`` (``NodataFailMetric`` for a
   ``must_have_data`` metric) — unless the metric has failure conditions and canary samples,
   which then decide alone (``Pass``).
4. Outliers are removed by Kayenta's IQR detector (factor ``outlier_factor``, reduced
   sensitivity) unless ``outliers: keep``.
5. Identical samples, or one value across both: ``Pass``.
6. Mann-Whitney U (two-sided, ``scipy.stats.mannwhitneyu``) gives the statistic and p-value; the
   Hodges-Lehmann shift and its ``confidence`` interval decide as in Kayenta: ``High`` when the
   direction allows it, the interval's low end is above ``tolerance · |estimate|`` and the
   effect size is at least ``allowed_increase`` and the shift at least ``min_shift`` (an
   absolute floor, in the metric's unit); ``Low`` symmetrically; else ``Pass``.
7. A **critical** metric classified High/Low (beyond ``critical_increase``/``_decrease``, or by
   a failure condition) fails the whole analysis.

Then (:func:`judge`): per group the score is ``Pass / (Pass + High + Low + NodataFailMetric)``
in %; the total is the groups' weighted sum (``group_weights``; unweighted groups share what
is left of 100; weights are normalised over the groups present, and a group without judged
metrics counts 100 as in Kayenta). The verdict:

* ``fail`` — a critical failure (score 0), or a score below ``marginal_score``;
* ``nodata`` — no metric could be judged, or a metric that is not ``optional`` (a critical one
  included) has no data, or half of the metrics or more have none: a source that is down or
  slow never passes an analysis, a person decides;
* ``pass`` — score at least ``pass_score``; ``marginal`` — at least ``marginal_score``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import structlog

from patchpilot.agents.analysis.models import (
    AnalysisVerdict,
    Classification,
    GroupScore,
    MetricResult,
    SeriesSummary,
    Verdict,
)
from patchpilot.agents.analysis.stats import (
    Array,
    clean,
    effect_size,
    iqr_keep,
    mann_whitney,
    shift_interval,
)
from patchpilot.core.policy import (
    AnalysisPolicy,
    HostMetric,
    HttpMetric,
    MetricDirection,
    PrometheusMetric,
)

__all__ = ["analysis_reason", "classify_metric", "judge", "metric_phrase", "summarise"]

_log = structlog.get_logger(__name__, agent="analysis")

MetricSpec = HttpMetric | PrometheusMetric | HostMetric
_COUNTED = (
    Classification.PASS,
    Classification.HIGH,
    Classification.LOW,
    Classification.NODATA_FAIL,
)
_FAILED = frozenset({Classification.HIGH, Classification.LOW, Classification.NODATA_FAIL})
#: Kayenta's WeightedSumScorer.NODATA_THRESHOLD: this % of metrics without data or more.
NODATA_SHARE = 50.0


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def summarise(
    data: Array, *, raw_n: int | None = None, nan_dropped: int = 0, outliers: int = 0
) -> SeriesSummary:
    """n, median, mean, p95, min and max of ``data`` (all ``None`` when empty)."""
    counts = {
        "raw_n": data.size if raw_n is None else raw_n,
        "nan_dropped": nan_dropped,
        "outliers_removed": outliers,
    }
    if data.size == 0:
        return SeriesSummary(n=0, **counts)
    return SeriesSummary(
        n=int(data.size),
        median=_finite(float(np.median(data))),
        mean=_finite(float(np.mean(data))),
        p95=_finite(float(np.percentile(data, 95))),
        min=_finite(float(data.min())),
        max=_finite(float(data.max())),
        **counts,
    )


def _breaches(spec: MetricSpec, canary: Array, limit: int) -> tuple[Classification, int] | None:
    """A failure condition's class and the failed measurements, when over the limit."""
    if spec.fail_above is not None:
        above = int(np.count_nonzero(canary > spec.fail_above))
        if above > limit:
            return Classification.HIGH, above
    if spec.fail_below is not None:
        below = int(np.count_nonzero(canary < spec.fail_below))
        if below > limit:
            return Classification.LOW, below
    return None


def classify_metric(
    spec: MetricSpec,
    baseline: Sequence[float],
    canary: Sequence[float],
    policy: AnalysisPolicy,
    *,
    nodata_reason: str | None = None,
) -> MetricResult:
    """Classify one metric (the module's steps 1-7). ``nodata_reason``: why a side is empty."""
    base_raw, base_nan = clean(baseline)
    can_raw, can_nan = clean(canary)
    limit = spec.failure_limit if spec.failure_limit is not None else policy.failure_limit
    measure = spec.effect_size.measure
    common = {
        "name": spec.name,
        "provider": spec.provider,
        "group": spec.group,
        "unit": spec.effective_unit,
        "direction": spec.direction.value,
        "critical": spec.critical,
        "effect_measure": measure.value,
    }
    has_conditions = spec.fail_above is not None or spec.fail_below is not None

    def raw_summaries() -> dict[str, SeriesSummary]:
        return {
            "baseline": summarise(base_raw, raw_n=len(baseline), nan_dropped=base_nan),
            "canary": summarise(can_raw, raw_n=len(canary), nan_dropped=can_nan),
        }

    failed_measurements: int | None = None
    if has_conditions and can_raw.size:
        breach = _breaches(spec, can_raw, limit)
        if breach is not None:
            label, failed = breach
            bound = spec.fail_above if label is Classification.HIGH else spec.fail_below
            side = "above" if label is Classification.HIGH else "below"
            return MetricResult(
                **common,
                classification=label,
                critical_failure=spec.critical,
                **raw_summaries(),
                failed_measurements=failed,
                reason=(
                    f"{failed} of {can_raw.size} canary samples {side} {bound:g} "
                    f"(failure limit {limit})"
                ),
            )
        failed_measurements = 0
    if base_raw.size < policy.min_samples or can_raw.size < policy.min_samples:
        sides = f"baseline n={base_raw.size}, canary n={can_raw.size}, need {policy.min_samples}"
        if has_conditions and can_raw.size:
            return MetricResult(
                **common,
                classification=Classification.PASS,
                **raw_summaries(),
                failed_measurements=failed_measurements,
                reason=f"failure conditions hold; too few samples to compare ({sides})",
            )
        label = Classification.NODATA_FAIL if spec.must_have_data else Classification.NODATA
        why = f"no data ({sides})" + (f": {nodata_reason}" if nodata_reason else "")
        return MetricResult(**common, classification=label, **raw_summaries(), reason=why)

    return _compare(
        spec,
        policy,
        common,
        base_raw,
        can_raw,
        raw_n=(len(baseline), len(canary)),
        nan=(base_nan, can_nan),
        failed_measurements=failed_measurements,
    )


def _compare(
    spec: MetricSpec,
    policy: AnalysisPolicy,
    common: dict[str, Any],
    base_raw: Array,
    can_raw: Array,
    *,
    raw_n: tuple[int, int],
    nan: tuple[int, int],
    failed_measurements: int | None,
) -> MetricResult:
    """Steps 4-7: outliers, identical data, Mann-Whitney and the shift's interval, critical."""
    measure = spec.effect_size.measure
    if policy.outliers == "remove":
        base = iqr_keep(base_raw, policy.outlier_factor)
        can = iqr_keep(can_raw, policy.outlier_factor)
    else:
        base, can = base_raw, can_raw
    summaries = {
        "baseline": summarise(
            base,
            raw_n=raw_n[0],
            nan_dropped=nan[0],
            outliers=int(base_raw.size - base.size),
        ),
        "canary": summarise(
            can, raw_n=raw_n[1], nan_dropped=nan[1], outliers=int(can_raw.size - can.size)
        ),
    }
    neutral = spec.effect_size.neutral()
    if np.array_equal(np.sort(base), np.sort(can)):
        return MetricResult(
            **common,
            classification=Classification.PASS,
            **summaries,
            effect_size=neutral,
            failed_measurements=failed_measurements,
            reason="the canary and baseline data are identical",
        )
    if np.ptp(np.concatenate([base, can])) == 0:
        return MetricResult(
            **common,
            classification=Classification.PASS,
            **summaries,
            effect_size=neutral,
            failed_measurements=failed_measurements,
            reason="every sample has the same value",
        )

    test = mann_whitney(can, base)
    interval = shift_interval(can, base, policy.confidence)
    effect = effect_size(can, base, measure)
    bound = policy.tolerance * abs(interval.estimate)
    allowed_up = spec.effect_size.allowed_increase
    allowed_down = spec.effect_size.allowed_decrease
    floor = spec.effect_size.min_shift
    material = floor is None or abs(interval.estimate) >= floor
    up_ok = material and (
        math.isnan(effect) or effect >= (neutral if allowed_up is None else allowed_up)
    )
    down_ok = material and (
        math.isnan(effect) or effect <= (neutral if allowed_down is None else allowed_down)
    )
    worse_up = spec.direction in (MetricDirection.INCREASE, MetricDirection.EITHER)
    worse_down = spec.direction in (MetricDirection.DECREASE, MetricDirection.EITHER)
    label = Classification.PASS
    if worse_up and interval.low > bound and up_ok:
        label = Classification.HIGH
    elif worse_down and interval.high < -bound and down_ok:
        label = Classification.LOW
    critical_failure = False
    if spec.critical and label is Classification.HIGH:
        limit_up = spec.effect_size.critical_increase
        critical_failure = math.isnan(effect) or effect >= (
            neutral if limit_up is None else limit_up
        )
    elif spec.critical and label is Classification.LOW:
        limit_down = spec.effect_size.critical_decrease
        critical_failure = math.isnan(effect) or effect <= (
            neutral if limit_down is None else limit_down
        )
    pct = round(policy.confidence * 100)
    reason = (
        f"shift {interval.estimate:.4g} ({pct} % interval {interval.low:.4g} .. "
        f"{interval.high:.4g}), {measure.value} {effect:.3g}, p={test.p_value:.2g}"
    )
    if label is not Classification.PASS:
        reason = f"{label.value}" + (" (critical)" if critical_failure else "") + f": {reason}"
    elif not material:
        reason = f"{reason}; below min_shift {floor:.4g}"
    return MetricResult(
        **common,
        classification=label,
        critical_failure=critical_failure,
        **summaries,
        statistic=_finite(test.statistic),
        p_value=_finite(test.p_value),
        estimate=_finite(interval.estimate),
        ci_low=_finite(interval.low),
        ci_high=_finite(interval.high),
        effect_size=_finite(effect),
        failed_measurements=failed_measurements,
        reason=reason,
    )


def _group_scores(
    results: Sequence[MetricResult], weights: Mapping[str, float]
) -> list[GroupScore]:
    names = list(dict.fromkeys(r.group for r in results))
    if not names:
        return []
    explicit = {n: weights[n] for n in names if n in weights}
    rest = [n for n in names if n not in weights]
    share = max(0.0, 100.0 - sum(weights.values())) / len(rest) if rest else 0.0
    raw = {n: explicit.get(n, share) for n in names}
    total = sum(raw.values())
    normal = {n: (raw[n] / total * 100 if total else 100 / len(names)) for n in names}
    groups = []
    for name in names:
        labels = [r.classification for r in results if r.group == name]
        counts = {label.value: labels.count(label) for label in Classification if label in labels}
        counted = sum(labels.count(label) for label in _COUNTED)
        passed = labels.count(Classification.PASS)
        groups.append(
            GroupScore(
                name=name,
                score=round(passed / counted * 100, 2) if counted else 0.0,
                weight=round(normal[name], 4),
                nodata=counted == 0,
                counts=counts,
            )
        )
    return groups


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "?"
    if unit == "seconds":
        return f"{value * 1000:.0f} ms" if abs(value) < 10 else f"{value:.1f} s"
    if unit == "bytes":
        return f"{value / 1048576:.1f} MiB"
    return f"{value:.3g}"


def metric_phrase(result: MetricResult) -> str:
    """One metric's evidence in a few words, e.g. ``latency p50 5.1x baseline (p=0.0003)``."""
    name, unit = result.name, result.unit
    base, can = result.baseline, result.canary
    if result.classification in (Classification.NODATA, Classification.NODATA_FAIL):
        return f"{name} no data"
    if unit in ("ratio", "percent"):
        scale = 100 if unit == "ratio" else 1
        phrase = (
            f"{name} {(can.mean or 0) * scale:.1f} % vs {(base.mean or 0) * scale:.1f} %"
            if base.n
            else f"{name} {(can.mean or 0) * scale:.1f} %"
        )
    elif base.median and can.median is not None and base.median > 0:
        phrase = f"{name} p50 {can.median / base.median:.1f}x baseline"
    else:
        phrase = f"{name} p50 {_fmt(can.median, unit)} vs {_fmt(base.median, unit)}"
    if result.failed_measurements and result.classification in _FAILED and result.p_value is None:
        bound = "fail_above" if result.classification is Classification.HIGH else "fail_below"
        return f"{phrase} ({result.failed_measurements} of {can.n} samples past {bound})"
    if result.p_value is not None:
        return f"{phrase} (p={result.p_value:.2g})"
    return phrase


def analysis_reason(verdict: Verdict, score: float, results: Sequence[MetricResult]) -> str:
    """The one-line reason: ``analysis failed: latency p50 5.1x baseline (p=0.0003), ...``."""
    failed = sorted(
        (r for r in results if r.classification in _FAILED),
        key=lambda r: (not r.critical_failure, not r.critical),
    )
    missing = [r for r in results if r.classification is Classification.NODATA]
    if verdict is Verdict.FAIL:
        named = ", ".join(metric_phrase(r) for r in failed) or "no metric passed"
        return f"analysis failed: {named}"
    if verdict is Verdict.NODATA:
        named = ", ".join(metric_phrase(r) for r in missing) or "no metrics"
        return f"analysis nodata: {named}"
    if verdict is Verdict.MARGINAL:
        named = ", ".join(metric_phrase(r) for r in failed)
        return f"analysis marginal: score {score:.1f}" + (f": {named}" if named else "")
    return f"analysis passed: score {score:.1f}"


def judge(
    baseline: Mapping[str, Sequence[float]],
    canary: Mapping[str, Sequence[float]],
    specs: Sequence[MetricSpec],
    policy: AnalysisPolicy,
    *,
    nodata_reasons: Mapping[str, str] | None = None,
) -> AnalysisVerdict:
    """Judge the canary's samples against the baseline's, metric by metric (see the module).

    Args:
        baseline: metric name -> samples of the baseline (peers over the same window, or the
            hosts' own window before the patch); a missing name means no data.
        canary: metric name -> samples of the patched hosts.
        specs: the metrics to judge (the policy's, selected for these hosts).
        policy: the ``analysis`` section (confidence, thresholds, weights...).
        nodata_reasons: metric name -> why a side has no data (the providers' reasons).

    Returns:
        The verdict, the total and group scores, and every metric's evidence.
    """
    reasons = nodata_reasons or {}
    results = [
        classify_metric(
            spec,
            baseline.get(spec.name, ()),
            canary.get(spec.name, ()),
            policy,
            nodata_reason=reasons.get(spec.name),
        )
        for spec in specs
    ]
    groups = _group_scores(results, policy.group_weights)
    optional = {s.name for s in specs if s.optional}
    nodata = [r for r in results if r.classification is Classification.NODATA]
    judged = [r for r in results if r.classification is not Classification.NODATA]
    if any(r.critical_failure for r in results):
        verdict, score = Verdict.FAIL, 0.0
    elif not judged:
        verdict, score = Verdict.NODATA, 0.0
    else:
        total = sum((100.0 if g.nodata else g.score) * g.weight / 100 for g in groups)
        score = round(min(max(total, 0.0), 100.0), 2)
        if score < policy.marginal_score:
            verdict = Verdict.FAIL
        elif any(r.name not in optional for r in nodata) or (
            len(nodata) / len(results) * 100 >= NODATA_SHARE
        ):
            verdict = Verdict.NODATA
        elif score >= policy.pass_score:
            verdict = Verdict.PASS
        else:
            verdict = Verdict.MARGINAL
    reason = analysis_reason(verdict, score, results)
    _log.info(
        "analysis.judged",
        verdict=verdict.value,
        score=score,
        metrics={r.name: r.classification.value for r in results},
    )
    return AnalysisVerdict(
        verdict=verdict,
        score=score,
        pass_score=policy.pass_score,
        marginal_score=policy.marginal_score,
        confidence=policy.confidence,
        metrics=results,
        groups=groups,
        reason=reason,
    )

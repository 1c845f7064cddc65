"""Post-patch analysis: Kayenta's canary judge (deterministic, no LLM) and robust z-scores.

>>> from patchpilot.agents.analysis import judge
>>> verdict = judge(baseline, canary, policy.analysis.metrics, policy.analysis)  # doctest: +SKIP
>>> verdict.verdict, verdict.reason  # doctest: +SKIP
('fail', 'analysis failed: latency p50 5.1x baseline (p=3e-21)')
"""

from patchpilot.agents.analysis.judge import (
    analysis_reason,
    classify_metric,
    judge,
    metric_phrase,
    summarise,
)
from patchpilot.agents.analysis.models import (
    AnalysisVerdict,
    Classification,
    GroupScore,
    MetricResult,
    SeriesSummary,
    Verdict,
)
from patchpilot.agents.analysis.stats import effect_size, iqr_keep, robust_z, shift_interval

__all__ = [
    "AnalysisVerdict",
    "Classification",
    "GroupScore",
    "MetricResult",
    "SeriesSummary",
    "Verdict",
    "analysis_reason",
    "classify_metric",
    "effect_size",
    "iqr_keep",
    "judge",
    "metric_phrase",
    "robust_z",
    "shift_interval",
    "summarise",
]

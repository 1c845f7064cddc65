"""The judge's output: per-metric evidence, group scores and the verdict (pydantic, JSON-safe).

Every float is finite or ``None`` (a ratio of a zero mean, a test that could not run), so the
models serialise to strict JSON. The run document's ``analysis`` entries keep these names:
``verdict``, ``score`` and, per metric, ``name``, ``classification``, ``baseline``, ``canary``
and ``p_value``.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AnalysisVerdict",
    "Classification",
    "GroupScore",
    "MetricResult",
    "SeriesSummary",
    "Verdict",
]


class Classification(StrEnum):
    """A metric's class, Kayenta's labels."""

    PASS = "Pass"  # noqa: S105 -- a class label, not a secret
    HIGH = "High"
    """the canary is significantly higher than the baseline (or above ``fail_above``)"""
    LOW = "Low"
    """the canary is significantly lower than the baseline (or below ``fail_below``)"""
    NODATA_FAIL = "NodataFailMetric"
    """no data for a ``must_have_data`` metric: counts as a failed metric"""
    NODATA = "Nodata"
    """too few samples on either side to judge"""


class Verdict(StrEnum):
    """The analysis' outcome: pass → next ring, fail → roll back, marginal/nodata → a person."""

    PASS = "pass"  # noqa: S105 -- a verdict, not a secret
    MARGINAL = "marginal"
    FAIL = "fail"
    NODATA = "nodata"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SeriesSummary(_Model):
    """One side's samples as judged (after NaN and outlier removal)."""

    n: int = Field(ge=0, description="samples judged")
    median: float | None = None
    mean: float | None = None
    p95: float | None = None
    min: float | None = None
    max: float | None = None
    raw_n: int = Field(default=0, ge=0, description="samples collected")
    nan_dropped: int = Field(default=0, ge=0, description="NaN/infinite samples dropped")
    outliers_removed: int = Field(default=0, ge=0, description="dropped by the IQR detector")


class MetricResult(_Model):
    """The evidence and class of one metric."""

    name: str
    provider: str
    group: str
    unit: str
    direction: str
    critical: bool
    classification: Classification
    critical_failure: bool = Field(
        default=False, description="this metric alone fails the analysis"
    )
    baseline: SeriesSummary
    canary: SeriesSummary
    statistic: float | None = Field(default=None, description="Mann-Whitney U of the canary")
    p_value: float | None = Field(default=None, description="two-sided Mann-Whitney p-value")
    estimate: float | None = Field(
        default=None, description="Hodges-Lehmann shift, canary minus baseline"
    )
    ci_low: float | None = Field(default=None, description="confidence interval of the shift")
    ci_high: float | None = None
    effect_size: float | None = Field(default=None, description="per effect_measure")
    effect_measure: str = "mean_ratio"
    failed_measurements: int | None = Field(
        default=None, description="canary samples breaking fail_above / fail_below"
    )
    reason: str = ""


class GroupScore(_Model):
    """One score group: the % of its counted metrics that passed."""

    name: str
    score: float = Field(ge=0, le=100)
    weight: float = Field(ge=0, le=100, description="its share of the total score, in %")
    nodata: bool = Field(description="no metric of the group could be judged")
    counts: dict[str, int] = Field(default_factory=dict, description="classification -> metrics")


class AnalysisVerdict(_Model):
    """The judge's answer for one comparison (a ring's patched hosts against a baseline)."""

    verdict: Verdict
    score: float = Field(ge=0, le=100)
    pass_score: float
    marginal_score: float
    confidence: float
    metrics: list[MetricResult] = Field(default_factory=list)
    groups: list[GroupScore] = Field(default_factory=list)
    reason: str = Field(
        description="one line; for a fail it starts with 'analysis failed' and names the "
        "failing metrics"
    )

    @property
    def failing(self) -> list[str]:
        """Names of the metrics classified High, Low or NodataFailMetric."""
        bad = {Classification.HIGH, Classification.LOW, Classification.NODATA_FAIL}
        return [m.name for m in self.metrics if m.classification in bad]

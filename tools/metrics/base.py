"""The metric-provider seam: ``collect(host, spec, window) -> MetricSeries``.

A provider turns one policy metric (:data:`patchpilot.core.policy.AnalysisMetric`) into a series
of numbers for one host over one :class:`MetricWindow`. Providers never decide anything and
never raise because a source is down, slow or says nothing: they return a series with no
samples and a ``nodata_reason`` (the judge turns that into ``nodata``, never a pass). They raise
only for configuration errors (:class:`~patchpilot.core.errors.ConfigError`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator

from patchpilot.core.models import Host
from patchpilot.core.policy import HostMetric, HttpMetric, PrometheusMetric

__all__ = [
    "Clock",
    "MetricProvider",
    "MetricSeries",
    "MetricSpec",
    "MetricWindow",
    "Sleeper",
    "WallClock",
]

MetricSpec: TypeAlias = HttpMetric | PrometheusMetric | HostMetric
"""Any metric of the policy's ``analysis`` section."""

Clock: TypeAlias = Callable[[], float]
"""A monotonic clock in seconds (``time.monotonic``; tests pass a fake)."""
Sleeper: TypeAlias = Callable[[float], None]
"""Waits that many seconds (``time.sleep``; tests pass a fake)."""
WallClock: TypeAlias = Callable[[], datetime]
"""The current UTC time (tests pass a fake)."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class MetricWindow(BaseModel):
    """``count`` samples ``interval_s`` apart from ``start`` (so it ends at ``end``).

    Live providers (HTTP probes, the host's sampled signals) sample ``count`` times at
    ``interval_s`` when called; range providers (Prometheus, the journal) read ``[start,
    end]`` and wait for ``end`` when it is still ahead.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: datetime = Field(description="timezone-aware")
    interval_s: float = Field(gt=0, le=3600)
    count: int = Field(ge=1, le=100_000)
    offset_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="live providers start sampling this long after they are called "
        "(collect_hosts staggers the hosts of one window within one interval, so their "
        "requests never fire on the same tick: the first one submitted measured slower)",
    )

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("the window's start must be timezone-aware")
        return value.astimezone(UTC)

    @property
    def end(self) -> datetime:
        """``start + count * interval_s``."""
        return self.start + timedelta(seconds=self.count * self.interval_s)

    @property
    def duration_s(self) -> float:
        """``count * interval_s``."""
        return self.count * self.interval_s

    @classmethod
    def starting_now(
        cls, interval_s: float, count: int, *, now: WallClock = utc_now
    ) -> MetricWindow:
        """A window starting now."""
        return cls(start=now(), interval_s=interval_s, count=count)


class MetricSeries(BaseModel):
    """The samples of one metric on one host (empty with a reason: no data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    host: str
    provider: str
    unit: str = "other"
    samples: list[float] = Field(default_factory=list)
    nodata_reason: str | None = Field(
        default=None, description="why there are no samples (source down, signal absent...)"
    )

    @property
    def nodata(self) -> bool:
        """True when there is no sample."""
        return not self.samples

    @classmethod
    def empty(cls, spec: MetricSpec, host: Host, reason: str) -> MetricSeries:
        """A series of ``spec`` on ``host`` with no data, for ``reason``."""
        return cls(
            name=spec.name,
            host=host.name,
            provider=spec.provider,
            unit=spec.effective_unit,
            nodata_reason=reason,
        )

    @classmethod
    def of(cls, spec: MetricSpec, host: Host, samples: list[float]) -> MetricSeries:
        """A series of ``spec`` on ``host`` (no samples: ``nodata_reason`` "no samples")."""
        return cls(
            name=spec.name,
            host=host.name,
            provider=spec.provider,
            unit=spec.effective_unit,
            samples=samples,
            nodata_reason=None if samples else "no samples",
        )


class MetricProvider(abc.ABC):
    """Collects one kind of metric (``provider`` of the policy's metrics)."""

    kind: str
    """The policy's ``provider`` value this provider serves."""

    @abc.abstractmethod
    def collect(self, host: Host, spec: MetricSpec, window: MetricWindow) -> MetricSeries:
        """The series of ``spec`` on ``host`` over ``window`` (no data: empty, with a reason).

        Raises:
            ConfigError: ``spec`` cannot be used for ``host`` (e.g. its URL does not render).
        """

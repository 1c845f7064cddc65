"""``/metrics``: the store's numbers in the Prometheus text format (prometheus-client).

    body, content_type = render_metrics(store)

Every scrape builds a fresh :class:`~prometheus_client.CollectorRegistry` from what the store
holds at that moment, so the figures are exactly what the API's read endpoints serve at the
same time, and nothing lives in the process (several service processes agree):

- ``patchpilot_pending_updates{host}`` / ``patchpilot_security_updates{host}``: pending
  updates (held ones included) of each host's latest successful discovery, and how many of
  them come from a ``-security`` suite (the ``pending`` question tool's rows);
- ``patchpilot_findings{host,severity}``: open findings of each host's latest scan;
- ``patchpilot_overdue_findings{host}``: those whose SLA due date is before today (UTC);
- ``patchpilot_host_compliance{host,state}``: 1 for the host's SLA state (``overdue``,
  ``due``, ``no-sla``, ``clean``, as the ``compliance`` question tool computes it from the
  findings), 0 for the others;
- ``patchpilot_runs{kind,status}``: recorded runs (scans and patch runs) by status;
- ``patchpilot_rollbacks_total``: updates rolled back, over all runs (deployment outcomes);
- ``patchpilot_stage_duration_seconds{stage}``: a histogram of how long each ended stage of
  the patch runs took (discovery, sourcing, assessment, planning, testing, awaiting_approval,
  awaiting_window, deployment: every ring, finish), from the store's ``run_stages`` rows the
  runs write as they go (:mod:`patchpilot.core.store.stages`); a stage still going on is not
  counted until it ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from patchpilot.core.models import Severity, utcnow
from patchpilot.core.store import Store
from patchpilot.core.store.records import OutcomeStatus
from patchpilot.core.store.stages import STAGES, StageRecord
from patchpilot.tools.queries.common import ResolvedScope, latest_snapshots

__all__ = [
    "COMPLIANCE_STATES",
    "MAX_COUNTED",
    "STAGE_BUCKETS",
    "render_metrics",
    "sla_state",
    "stage_histogram",
]

COMPLIANCE_STATES: Final = ("overdue", "due", "no-sla", "clean")
"""A host's SLA state: findings past due, findings due later, findings without a due date,
no open finding."""

MAX_COUNTED: Final = 1_000_000
"""Most runs and deployment outcomes counted per scrape."""

STAGE_BUCKETS: Final[tuple[float, ...]] = (
    1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 3 * 24 * 3600,
)  # fmt: skip
"""Upper bounds (seconds) of the stage-duration histogram's buckets (``+Inf`` added): from a
quick step to an approval that waits for days."""


def _go_float(bound: float) -> str:
    """A bucket bound as prometheus-client writes floats (``5.0``, ``14400.0``)."""
    return repr(float(bound))


def stage_histogram(records: list[StageRecord]) -> HistogramMetricFamily:
    """``patchpilot_stage_duration_seconds{stage}`` of the ended stages in ``records``."""
    family = HistogramMetricFamily(
        "patchpilot_stage_duration_seconds",
        "How long each ended stage of the patch runs took (store: run_stages).",
        labels=["stage"],
    )
    by_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for record in records:
        seconds = record.seconds
        if seconds is not None:
            by_stage[record.stage].append(seconds)
    for stage, values in by_stage.items():
        if not values:
            continue
        buckets = [
            (_go_float(bound), sum(1 for v in values if v <= bound)) for bound in STAGE_BUCKETS
        ]
        buckets.append(("+Inf", len(values)))
        family.add_metric([stage], buckets, sum_value=sum(values))
    return family


def sla_state(dues: list[date | None], today: date) -> str:
    """A host's SLA state from its open findings' due dates (None: no SLA)."""
    known = [d for d in dues if d is not None]
    if any(d < today for d in known):
        return "overdue"
    if known:
        return "due"
    return "no-sla" if dues else "clean"


class _StoreCollector(Collector):
    """Reads the store once, when collected."""

    def __init__(self, store: Store, now: datetime) -> None:
        self._store = store
        self._now = now

    def collect(self) -> Iterator[Metric]:
        store = self._store
        today = self._now.date()
        snapshots = latest_snapshots(store, ResolvedScope(names=None))
        pending = GaugeMetricFamily(
            "patchpilot_pending_updates",
            "Pending updates of the host's latest successful discovery (held ones included).",
            labels=["host"],
        )
        security = GaugeMetricFamily(
            "patchpilot_security_updates",
            "Pending updates from a -security suite, of the host's latest discovery.",
            labels=["host"],
        )
        for host, (_, result) in snapshots.items():
            pending.add_metric([host], len(result.pending))
            security.add_metric([host], sum(1 for u in result.pending if u.security))
        yield pending
        yield security

        records = store.findings()
        by_severity: Counter[tuple[str, str]] = Counter()
        dues: dict[str, list[date | None]] = {host: [] for host in snapshots}
        for record in records:
            host = record.finding.host
            by_severity[(host, record.finding.severity.value)] += 1
            due = record.risk.due_date if record.risk is not None else None
            dues.setdefault(host, []).append(due)
        findings = GaugeMetricFamily(
            "patchpilot_findings",
            "Open findings of the host's latest scan, by severity.",
            labels=["host", "severity"],
        )
        for host in sorted(dues):
            for severity in Severity:
                findings.add_metric([host, severity.value], by_severity[(host, severity.value)])
        yield findings
        overdue = GaugeMetricFamily(
            "patchpilot_overdue_findings",
            "Open findings whose SLA due date is before today (UTC).",
            labels=["host"],
        )
        compliance = GaugeMetricFamily(
            "patchpilot_host_compliance",
            "1 for the host's SLA state (overdue, due, no-sla, clean), 0 for the others.",
            labels=["host", "state"],
        )
        for host in sorted(dues):
            overdue.add_metric([host], sum(1 for d in dues[host] if d is not None and d < today))
            state = sla_state(dues[host], today)
            for name in COMPLIANCE_STATES:
                compliance.add_metric([host, name], 1 if name == state else 0)
        yield overdue
        yield compliance

        runs = GaugeMetricFamily(
            "patchpilot_runs", "Recorded runs by kind and status.", labels=["kind", "status"]
        )
        for (kind, status), count in sorted(
            Counter((r.kind, r.status) for r in store.list_runs(limit=MAX_COUNTED)).items()
        ):
            runs.add_metric([kind, status], count)
        yield runs
        rollbacks = sum(
            1
            for o in store.recent_outcomes(limit=MAX_COUNTED)
            if o.status == OutcomeStatus.ROLLBACK
        )
        yield CounterMetricFamily(
            "patchpilot_rollbacks", "Updates rolled back, over all runs.", value=rollbacks
        )
        yield stage_histogram(store.ended_stages(limit=MAX_COUNTED))


def render_metrics(store: Store, *, now: datetime | None = None) -> tuple[bytes, str]:
    """The store's metrics in the Prometheus text format.

    Args:
        store: The store to read.
        now: The reference time of "overdue" (default: now, UTC).

    Returns:
        The body and its content type (prometheus-client's ``CONTENT_TYPE_LATEST``,
        ``text/plain; version=...; charset=utf-8``).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StoreCollector(store, now or utcnow()))
    return generate_latest(registry), CONTENT_TYPE_LATEST

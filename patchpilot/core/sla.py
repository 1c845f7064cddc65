"""SLA arithmetic: due dates, compliance states, time-to-remediate statistics (pure).

Nothing here reads a file, the store or the clock: every function takes what it needs, so the
compliance history (:mod:`patchpilot.app.compliance`) and its tests share one definition.

**Due date** (:func:`sla_due`): the earliest of the bounds that apply to an item first seen on
``first_seen`` (a UTC day):

- the risk assessment's due date, when the item's assessment gave one (``first_seen`` + the
  stricter of the severity and SSVC days, never later than a KEV ``dueDate``: see
  :mod:`patchpilot.agents.prioritization`); without one, ``first_seen`` + the severity days
  and the SSVC days computed here;
- for a CVE in CISA's KEV catalog: the catalog's ``dueDate`` and ``dateAdded`` +
  ``sla_days.kev`` days (BOD 22-01: two weeks for new entries);
- ``first_seen`` + the days of the host's exposure (``sla_days.exposure``) and of its
  criticality (``sla_days.criticality``), when the policy sets them.

``basis`` names the bound that set the date, in words (shown beside the due date).

**States** (:data:`STATES`, after AWS SSM's compliance states plus ``overdue``): ``compliant``
(fixed), ``accepted`` (open, covered by a live risk acceptance), ``overdue`` (open, its due
date has passed: the day after the due date, UTC), ``unknown`` (open, the host's latest scan
failed), ``non_compliant`` (open, not yet due).

**Kaplan-Meier** (:func:`kaplan_meier`): the product-limit estimate of the share of items
still open after ``t`` days, where items still open are right-censored at their current age
(counted at risk until then, never dropped). Ties: at one time, fixes are removed before
censored items (the usual convention: an item censored at ``t`` was still at risk at ``t``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Literal, get_args

from patchpilot.core.models import Exposure, KEVEntry, Severity, SSVCOutcome
from patchpilot.core.policy import KEVPolicy, SLAPolicy

__all__ = [
    "CYENTIA_CAPACITY",
    "CYENTIA_MEDIAN_DAYS",
    "STATES",
    "ComplianceState",
    "KMPoint",
    "SLADue",
    "capacity_band",
    "days_between",
    "host_state",
    "item_state",
    "kaplan_meier",
    "km_median",
    "overdue_at",
    "sla_due",
    "ttr_stats",
]

ComplianceState = Literal["compliant", "non_compliant", "overdue", "accepted", "unknown"]
"""An item's or a host's compliance state."""

STATES: Final[tuple[ComplianceState, ...]] = get_args(ComplianceState)
"""Every state, in the order above."""

CYENTIA_CAPACITY: Final[dict[str, float]] = {"low": 6.6, "median": 15.2, "high": 27.1}
"""Percent of open vulnerabilities organisations close per month (Cyentia/Kenna P2P Vol. 8)."""

CYENTIA_MEDIAN_DAYS: Final = 90
"""Median days to close a vulnerability (Cyentia/Kenna P2P Vol. 2, survival analysis)."""


@dataclass(frozen=True)
class SLADue:
    """An item's due date (``None``: no SLA applies) and the bound that set it."""

    due: date | None
    basis: str


def _plus(day: date, days: int) -> date:
    return day + timedelta(days=days)


def sla_due(
    policy: SLAPolicy,
    kev_policy: KEVPolicy,
    *,
    first_seen: date,
    severity: Severity,
    ssvc: SSVCOutcome | None = None,
    assessed_due: date | None = None,
    kev: Sequence[KEVEntry] = (),
    exposure: Exposure | None = None,
    criticality: int | None = None,
) -> SLADue:
    """The due date of an item first seen on ``first_seen`` (see the module docstring).

    Args:
        policy: ``policy.sla_days``.
        kev_policy: ``policy.kev`` (``due_date_is_hard_bound`` makes the catalog date bind).
        first_seen: The UTC day the item was first seen (this episode).
        severity: Its severity (used when there is no ``assessed_due``).
        ssvc: Its SSVC outcome, when assessed.
        assessed_due: The risk assessment's due date (already severity/SSVC/KEV based).
        kev: The KEV entries of its CVEs.
        exposure: The host's exposure, when known.
        criticality: The host's criticality (1-5), when known.
    """
    bounds: list[tuple[date, str]] = []
    if assessed_due is not None:
        bounds.append((assessed_due, "risk assessment (severity, SSVC, KEV)"))
    else:
        days = policy.days_for_severity(severity)
        if days is not None:
            bounds.append((_plus(first_seen, days), f"severity {severity.value}: {days} d"))
        if ssvc is not None:
            days = policy.days_for_ssvc(ssvc)
            if days is not None:
                bounds.append((_plus(first_seen, days), f"SSVC {ssvc.value}: {days} d"))
    for entry in kev:
        if kev_policy.due_date_is_hard_bound:
            bounds.append((entry.due_date, "CISA KEV catalog due date"))
        if policy.kev is not None:
            bounds.append(
                (
                    _plus(entry.date_added, policy.kev),
                    f"KEV: {policy.kev} d after it was listed (BOD 22-01)",
                )
            )
    if exposure is not None:
        days = policy.days_for_exposure(exposure)
        if days is not None:
            bounds.append((_plus(first_seen, days), f"{exposure.value} exposure: {days} d"))
    if criticality is not None:
        days = policy.days_for_criticality(criticality)
        if days is not None:
            bounds.append((_plus(first_seen, days), f"criticality {criticality}: {days} d"))
    if not bounds:
        return SLADue(None, "no SLA")
    due, basis = min(bounds, key=lambda b: b[0])
    return SLADue(due, basis)


def overdue_at(due: date) -> datetime:
    """When an item due on ``due`` becomes overdue: the start of the next UTC day."""
    return datetime.combine(due + timedelta(days=1), time(0), tzinfo=UTC)


def item_state(
    *,
    fixed: bool,
    accepted: bool,
    due: date | None,
    today: date,
    host_unknown: bool = False,
) -> ComplianceState:
    """An item's state: compliant > accepted > overdue > unknown > non_compliant."""
    if fixed:
        return "compliant"
    if accepted:
        return "accepted"
    if due is not None and due < today:
        return "overdue"
    if host_unknown:
        return "unknown"
    return "non_compliant"


def host_state(item_states: Sequence[ComplianceState], *, observed: bool) -> ComplianceState:
    """A host's state from its items' states (``observed``: its latest scan succeeded).

    ``overdue`` when any item is; else ``unknown`` when the host was never scanned successfully
    or its latest scan failed; else ``non_compliant`` when any item is open and not accepted;
    ``accepted`` when every open item is; ``compliant`` when none is open.
    """
    states = set(item_states)
    if "overdue" in states:
        return "overdue"
    if not observed or "unknown" in states:
        return "unknown"
    if "non_compliant" in states:
        return "non_compliant"
    if "accepted" in states:
        return "accepted"
    return "compliant"


def days_between(start: datetime, end: datetime) -> float:
    """Days from ``start`` to ``end`` (fractional; never negative)."""
    return max((end - start).total_seconds() / 86400.0, 0.0)


def ttr_stats(durations: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, median) days to remediate of the fixed items (``None`` when there are none)."""
    if not durations:
        return None, None
    return statistics.fmean(durations), statistics.median(durations)


@dataclass(frozen=True)
class KMPoint:
    """One step of the Kaplan-Meier curve: after ``days``, ``survival`` of items are open."""

    days: float
    survival: float
    at_risk: int
    fixed: int
    censored: int


def kaplan_meier(durations: Sequence[float], fixed: Sequence[bool]) -> list[KMPoint]:
    """The Kaplan-Meier estimate of the share of items still open after each time.

    Args:
        durations: Each item's days from first seen to its fix (``fixed``) or to now (open:
            right-censored).
        fixed: Whether each item was fixed (an event) or is still open (censored).

    Returns:
        The curve: the first point is ``(0, 1.0)`` with every item at risk, then one point per
        distinct time with a fix or a censored item (``survival`` changes only at fixes).

    Raises:
        ValueError: the sequences differ in length, or a duration is negative or not finite.
    """
    if len(durations) != len(fixed):
        raise ValueError("durations and fixed must have the same length")
    if any(not math.isfinite(d) or d < 0 for d in durations):
        raise ValueError("durations must be finite and not negative")
    times = sorted(set(durations))
    at_risk = len(durations)
    survival = 1.0
    curve = [KMPoint(0.0, 1.0, at_risk, 0, 0)]
    by_time: dict[float, list[int]] = {}
    for d, f in zip(durations, fixed, strict=True):
        counts = by_time.setdefault(d, [0, 0])
        counts[0 if f else 1] += 1
    for t in times:
        events, censored = by_time[t]
        if events:
            survival *= 1.0 - events / at_risk
        if t == 0.0 and curve[0].days == 0.0:
            curve[0] = KMPoint(0.0, survival, at_risk, events, censored)
        else:
            curve.append(KMPoint(t, survival, at_risk, events, censored))
        at_risk -= events + censored
    return curve


def km_median(curve: Sequence[KMPoint]) -> float | None:
    """The first time the curve is at or below one half (``None``: it never gets there)."""
    for point in curve:
        if point.survival <= 0.5:
            return point.days
    return None


def capacity_band(rate: float | None) -> str | None:
    """Where a monthly closure rate (percent) falls among Cyentia's figures, in words."""
    if rate is None:
        return None
    low, median, high = (CYENTIA_CAPACITY[k] for k in ("low", "median", "high"))
    if rate < low:
        return "below the low end"
    if rate < median:
        return "between the low end and the median"
    if rate < high:
        return "between the median and the high end"
    return "at or above the high end"

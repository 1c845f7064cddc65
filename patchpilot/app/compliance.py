"""Compliance against SLAs: the history per host and advisory, its document, breaches.

**The history** (:func:`sync`) is kept from what the store already holds, in time order and
exactly once per (run, host) observation:

- a scan (or a patch run's scan part) that assessed a host opens an *item* for each finding it
  has a fix to install (the fix exists and the host's repositories offer it, or the package is
  held), with ``first_seen`` (the finding's, or the time it was seen again after a fix), a
  ``due`` date from the SLA policy at first sight (:func:`patchpilot.core.sla.sla_due`; it only
  ever moves earlier, e.g. when a CVE enters CISA's KEV catalog) and the bound that set it;
- a later assessment of the host that no longer has the finding *fixes* it: by the patch run
  whose installed deployment on that host upgraded the package in between (``fixed_by`` = its
  run id, ``fixed_at`` = when that deployment finished), or else ``external`` (``fixed_at`` =
  the confirming scan). ``confirmed_at`` is the confirming scan either way. Until a scan
  confirms it, an installed deployment only marks the item's ``fix_candidate``;
- a failed discovery of the host marks its open items ``unknown`` until the next assessment;
- the clock: an open item becomes ``overdue`` the day after its due date; a live risk
  acceptance (``patchpilot accept``) makes it ``accepted`` until it expires or is removed.

Every change is a row of ``compliance_events`` (the state over time). :func:`sync` runs after
every scan started or resumed here (:func:`record_scan`), before every compliance document and
before breaches are read, so scans run by the service's executor are taken in too.

**The document** (:func:`compliance_document`, ``patchpilot.compliance/v1``): hosts, SLA
attainment and time to remediate, items, due-soon items, remediation capacity beside the
Cyentia figures, the Kaplan-Meier curve and the open/overdue counts over time. Renderers:
:func:`render_csv`, :func:`render_html` (one self-contained file, Jinja2 with autoescape).

**Breaches** (:func:`claim_breaches`, :func:`breaches_since`): items that became overdue;
:func:`patchpilot.app.notify.sla_breached_event` turns one into an ``sla-breached`` event.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

import structlog

from patchpilot.app.report import csv_cell
from patchpilot.core.acceptance import Acceptance, Acceptances
from patchpilot.core.models import (
    Exposure,
    FixStatus,
    Host,
    KEVEntry,
    utcnow,
)
from patchpilot.core.policy import Policy
from patchpilot.core.settings import Settings
from patchpilot.core.sla import (
    CYENTIA_CAPACITY,
    CYENTIA_MEDIAN_DAYS,
    ComplianceState,
    capacity_band,
    days_between,
    host_state,
    item_state,
    kaplan_meier,
    km_median,
    overdue_at,
    sla_due,
    ttr_stats,
)
from patchpilot.core.store import FindingRecord, Store
from patchpilot.core.store.compliance import (
    ComplianceEvent,
    ComplianceItem,
    EventRow,
    InstalledDeployment,
    ItemUpdate,
    NewItem,
    Observation,
)

__all__ = [
    "BACKFILL_GRACE",
    "CSV_COLUMNS",
    "SCHEMA",
    "Breach",
    "SyncResult",
    "breaches_since",
    "claim_breaches",
    "compliance_document",
    "record_scan",
    "render_csv",
    "render_html",
    "sync",
]

log = structlog.get_logger(__name__)

SCHEMA: Final = "patchpilot.compliance/v1"
BACKFILL_GRACE: Final = timedelta(days=1)
"""A breach recorded more than this after it happened (a history rebuilt from old scans) is
marked announced at once: only fresh breaches are notified."""
MAX_HISTORY_POINTS: Final = 400
"""Most points of the open/overdue series (daily, or weekly over a longer history)."""
MAX_MONTHS: Final = 24
"""Most months of remediation capacity listed."""
CYENTIA_SURVIVAL: Final[dict[str, float]] = {
    "open_after_365_days": 0.18,
    "fixed_within_30_days": 0.33,
}
"""Cyentia/Kenna P2P Vol. 2: 18 % still open after a year, about a third closed in 30 days."""

_EXPOSURE_FACTOR: Final = re.compile(r"^(internet|internal|isolated)")
_CRITICALITY_FACTOR: Final = re.compile(r"^criticality ([1-5])/5")


# --------------------------------------------------------------------------- the history


@dataclass(frozen=True)
class SyncResult:
    """What one :func:`sync` did."""

    observations: int
    opened: int
    fixed: int
    events: int


def _trackable(record: FindingRecord) -> bool:
    """A finding with a fix the host can install (or a held package): an SLA item."""
    finding = record.finding
    if finding.fix.status is FixStatus.HELD:
        return True
    return finding.fix.status is FixStatus.FIXED and finding.fix_reachable is True


def _host_profile(
    host: str, record: FindingRecord, hosts: Mapping[str, Host] | None
) -> tuple[Exposure | None, int | None]:
    """The host's exposure and criticality: from the inventory, else the risk factors."""
    if hosts is not None and host in hosts:
        return hosts[host].exposure, hosts[host].criticality
    exposure: Exposure | None = None
    criticality: int | None = None
    for factor in record.risk.factors if record.risk else ():
        if not factor.known:
            continue
        if factor.name == "exposure" and (m := _EXPOSURE_FACTOR.match(factor.value)):
            exposure = Exposure(m.group(1))
        elif factor.name == "criticality" and (m := _CRITICALITY_FACTOR.match(factor.value)):
            criticality = int(m.group(1))
    return exposure, criticality


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _due(
    policy: Policy,
    record: FindingRecord,
    first_seen: datetime,
    kev: Sequence[KEVEntry],
    hosts: Mapping[str, Host] | None,
    *,
    reopened: bool,
) -> tuple[date | None, str]:
    risk = record.risk
    exposure, criticality = _host_profile(record.finding.host, record, hosts)
    due = sla_due(
        policy.sla_days,
        policy.kev,
        first_seen=_day(first_seen),
        severity=record.finding.severity,
        ssvc=risk.ssvc if risk else None,
        # the assessment counts from the finding's first sight: not for a later episode
        assessed_due=risk.due_date if risk and not reopened else None,
        kev=kev,
        exposure=exposure,
        criticality=criticality,
    )
    return due.due, due.basis


def _overdue_row(
    item_due: date | None, first_seen: datetime, until: datetime, now: datetime
) -> EventRow | None:
    """The ``overdue`` event of an item open until ``until``, if it became overdue by then."""
    if item_due is None:
        return None
    at = max(overdue_at(item_due), first_seen)
    if at > until:
        return None
    notified = now if now - at > BACKFILL_GRACE else None
    return EventRow(at, "overdue", None, f"due {item_due.isoformat()}", notified)


def _fixing_deployment(
    item: ComplianceItem, deployments: Sequence[InstalledDeployment], until: datetime
) -> InstalledDeployment | None:
    """The latest deployment on the item's host, after it opened and by ``until``, that
    installed one of its packages."""
    found = None
    for dep in deployments:
        if dep.host != item.host or not item.first_seen <= dep.finished_at <= until:
            continue
        if item.source_package in dep.sources or dep.packages & set(item.binaries):
            found = dep
    return found


def _accepted_by(acceptances: Acceptances | None, item: ComplianceItem) -> Acceptance | None:
    if acceptances is None:
        return None
    return acceptances.for_ids(item.host, (item.advisory_id,), item.cves)


def _latest_event(events: Sequence[ComplianceEvent]) -> ComplianceEvent | None:
    return max(events, key=lambda e: (e.at, e.id)) if events else None


def _new_items(
    policy: Policy,
    obs: Observation,
    present: Mapping[tuple[str, str, str], FindingRecord],
    episodes: Sequence[ComplianceItem],
    kev_by_cve: Mapping[str, KEVEntry],
    hosts: Mapping[str, Host] | None,
) -> list[NewItem]:
    """The items ``obs`` opens: trackable findings without an open episode."""
    open_keys = {i.key for i in episodes if i.fixed_at is None}
    fixed_before = {i.key for i in episodes if i.fixed_at is not None}
    new: list[NewItem] = []
    for key, record in present.items():
        if key in open_keys or not _trackable(record):
            continue
        finding = record.finding
        reopened = key in fixed_before
        first_seen = obs.at if reopened else min(finding.first_seen, obs.at)
        kev = [kev_by_cve[c] for c in finding.cves if c in kev_by_cve]
        due, basis = _due(policy, record, first_seen, kev, hosts, reopened=reopened)
        detail = "seen again after its fix" if reopened else "first seen"
        new.append(
            NewItem(
                host=obs.host,
                source_package=finding.source_package,
                advisory_id=finding.advisory_id,
                cves=finding.cves,
                binaries=finding.binary_packages,
                severity=finding.severity.value,
                ssvc=record.risk.ssvc.value if record.risk else None,
                kev=bool(kev) or record.kev,
                first_seen=first_seen,
                run_id=obs.run_id,
                due=due,
                sla=basis,
                events=[EventRow(first_seen, "non_compliant", obs.run_id, detail)],
            )
        )
    return new


def _still_open(
    policy: Policy,
    obs: Observation,
    item: ComplianceItem,
    record: FindingRecord,
    events: Sequence[ComplianceEvent],
    kev_by_cve: Mapping[str, KEVEntry],
    hosts: Mapping[str, Host] | None,
) -> ItemUpdate:
    """An open item ``obs`` sees again: last seen, a failed fix, an earlier due date."""
    update = ItemUpdate(item.id, seen=(obs.at, obs.run_id))
    if item.candidate_run is not None:
        update.clear_candidate = True
        update.events.append(
            EventRow(
                obs.at,
                "non_compliant",
                obs.run_id,
                f"still present after run {item.candidate_run} installed its fix",
            )
        )
    kev = [kev_by_cve[c] for c in record.finding.cves if c in kev_by_cve]
    reopened = item.first_seen != record.finding.first_seen
    due, basis = _due(policy, record, item.first_seen, kev, hosts, reopened=reopened)
    if due is not None and (item.due is None or due < item.due):
        update.due = (due, basis)
        update.events.append(
            EventRow(obs.at, "non_compliant", obs.run_id, f"due moved to {due} ({basis})")
        )
    last = _latest_event(events)
    if last is not None and last.state == "unknown":
        update.events.append(EventRow(obs.at, "non_compliant", obs.run_id, "seen again"))
    return update


def _gone(
    obs: Observation,
    item: ComplianceItem,
    events: Sequence[ComplianceEvent],
    deployments: Sequence[InstalledDeployment],
    now: datetime,
) -> ItemUpdate:
    """An open item ``obs`` no longer sees: fixed by a run's deployment, or externally."""
    dep = _fixing_deployment(item, deployments, obs.at)
    fixed_at, fixed_by = (dep.finished_at, dep.run_id) if dep else (obs.at, "external")
    update = ItemUpdate(item.id, fixed=(fixed_at, fixed_by, obs.at, obs.run_id))
    if not any(e.state in ("overdue", "accepted") for e in events):
        overdue = _overdue_row(item.due, item.first_seen, fixed_at, now)
        if overdue is not None:
            update.events.append(overdue)
    how = f"fixed by run {fixed_by}" if dep else "fixed outside patchpilot"
    update.events.append(
        EventRow(fixed_at, "compliant", obs.run_id, f"{how}; confirmed by {obs.run_id}")
    )
    return update


def _apply_observation(
    store: Store,
    policy: Policy,
    obs: Observation,
    latest: Mapping[str, Observation],
    hosts: Mapping[str, Host] | None,
    now: datetime,
) -> tuple[int, int, int]:
    """Apply one observation; returns (opened, fixed, events)."""
    previous = latest.get(obs.host)
    if previous is not None and (previous.at, previous.run_id) > (obs.at, obs.run_id):
        # older than what is already applied (runs finishing out of order): nothing to learn
        store.compliance_apply(obs, applied_at=now)
        return 0, 0, 0
    episodes = store.compliance_items(host=obs.host)
    open_items = {i.key: i for i in episodes if i.fixed_at is None}
    if not obs.ok:
        failed = [
            ItemUpdate(item.id, events=[EventRow(obs.at, "unknown", obs.run_id, "scan failed")])
            for item in open_items.values()
        ]
        store.compliance_apply(obs, updates=failed, applied_at=now)
        return 0, 0, len(failed)
    records = store.findings(run_id=obs.run_id, host=obs.host)
    present = {(obs.host, r.finding.source_package, r.finding.advisory_id): r for r in records}
    kev_by_cve = {
        cve: e.kev
        for cve, e in store.enrichment({c for r in records for c in r.finding.cves}).items()
        if e.kev is not None
    }
    new = _new_items(policy, obs, present, episodes, kev_by_cve, hosts)
    deployments = store.installed_deployments([obs.host]) if open_items else []
    updates: list[ItemUpdate] = []
    fixed = 0
    for key, item in open_items.items():
        events = store.compliance_events(item=item.id)
        record = present.get(key)
        if record is not None:
            updates.append(_still_open(policy, obs, item, record, events, kev_by_cve, hosts))
        else:
            updates.append(_gone(obs, item, events, deployments, now))
            fixed += 1
    store.compliance_apply(obs, new, updates, applied_at=now)
    return len(new), fixed, sum(len(n.events) for n in new) + sum(len(u.events) for u in updates)


def _apply_clock(store: Store, acceptances: Acceptances | None, now: datetime) -> tuple[int, int]:
    """Overdue, accepted and fix-candidate changes of the open items; returns (updates,
    events). Without ``acceptances``, an item last seen accepted is taken as still accepted."""
    items = store.compliance_items(open_only=True)
    if not items:
        return 0, 0
    deployments = store.installed_deployments({i.host for i in items})
    all_events = store.compliance_open_events()
    updates: list[ItemUpdate] = []
    for item in items:
        events = all_events.get(item.id, [])
        update = ItemUpdate(item.id)
        last = _latest_event(events)
        was_accepted = last is not None and last.state == "accepted"
        accepted = _accepted_by(acceptances, item)
        if accepted is not None:
            if not was_accepted:
                at = max(accepted.created or now, item.first_seen)
                update.events.append(
                    EventRow(
                        min(at, now),
                        "accepted",
                        None,
                        f"accepted by {accepted.by} until {accepted.until}: {accepted.reason}",
                    )
                )
        elif not (acceptances is None and was_accepted):
            # an acceptance that ended (expired or withdrawn) counts from now
            not_before = item.first_seen
            if was_accepted:
                update.events.append(EventRow(now, "non_compliant", None, "acceptance ended"))
                not_before = now
            accepted_since = max((e.at for e in events if e.state == "accepted"), default=None)
            breached = any(
                e.state == "overdue" and (accepted_since is None or e.at >= accepted_since)
                for e in events
            )
            if not breached:
                overdue = _overdue_row(item.due, not_before, now, now)
                if overdue is not None:
                    update.events.append(overdue)
        if item.candidate_run is None:
            dep = _fixing_deployment(item, deployments, now)
            if dep is not None and dep.finished_at > item.last_seen:
                update.candidate = (dep.run_id, dep.finished_at)
        if update.events or update.candidate is not None:
            updates.append(update)
    if updates:
        store.compliance_apply(None, updates=updates, applied_at=now)
    return len(updates), sum(len(u.events) for u in updates)


def sync(
    store: Store,
    policy: Policy | None,
    *,
    acceptances: Acceptances | None = None,
    hosts: Mapping[str, Host] | None = None,
    now: datetime | None = None,
) -> SyncResult:
    """Bring the compliance history up to date (see the module docstring); idempotent.

    Args:
        store: The store.
        policy: The SLA policy for items opened now; ``None``: leave new observations for a
            later sync and apply only the clock.
        acceptances: The risk acceptances as they stand (``None``: acceptance changes are not
            recorded now).
        hosts: The inventory's hosts (exposure and criticality; else read from the risk).
        now: The time (default: now, UTC).
    """
    moment = now or utcnow()
    observations = opened = fixed = events = 0
    if policy is not None:
        latest = dict(store.compliance_observed())
        for obs in store.compliance_pending():
            if obs.at > moment:
                break
            o, f, e = _apply_observation(store, policy, obs, latest, hosts, moment)
            previous = latest.get(obs.host)
            if previous is None or (previous.at, previous.run_id) <= (obs.at, obs.run_id):
                latest[obs.host] = obs
            observations += 1
            opened += o
            fixed += f
            events += e
    _, clock_events = _apply_clock(store, acceptances, moment)
    events += clock_events
    if observations or events:
        log.info(
            "compliance.synced",
            observations=observations,
            opened=opened,
            fixed=fixed,
            events=events,
        )
    return SyncResult(observations, opened, fixed, events)


def record_scan(settings: Settings, store: Store, run_id: str, hosts: Sequence[Host] = ()) -> None:
    """Take a finished scan into the compliance history (never fails the scan: logged)."""
    from patchpilot.app import acceptances as accept
    from patchpilot.core.policy import load_policy

    try:
        sync(
            store,
            load_policy(settings.policy_path),
            acceptances=accept.load(settings),
            hosts={h.name: h for h in hosts} or None,
        )
    except Exception as exc:  # the scan is done; the history catches up at the next sync
        log.warning("compliance.sync_failed", run_id=run_id, error=str(exc))


# --------------------------------------------------------------------------- breaches


@dataclass(frozen=True)
class Breach:
    """An item that became overdue at ``at``."""

    host: str
    package: str
    advisory: str
    cves: tuple[str, ...]
    due: date | None
    at: datetime
    sla: str


def _breaches(store: Store, events: Iterable[ComplianceEvent]) -> list[Breach]:
    wanted = list(events)
    if not wanted:
        return []
    items = {i.id: i for i in store.compliance_items()}
    found = []
    for event in wanted:
        item = items.get(event.item)
        if item is None:
            continue
        found.append(
            Breach(
                host=item.host,
                package=item.source_package,
                advisory=item.advisory_id,
                cves=item.cves,
                due=item.due,
                at=event.at,
                sla=item.sla,
            )
        )
    return found


def _sync_for(
    store: Store, settings: Settings | None, policy: Policy | None, now: datetime
) -> None:
    if settings is None:
        sync(store, policy, now=now)
        return
    from patchpilot.app import acceptances as accept
    from patchpilot.core.policy import load_policy

    sync(
        store,
        policy if policy is not None else load_policy(settings.policy_path),
        acceptances=accept.load(settings),
        now=now,
    )


def breaches_since(
    store: Store,
    since: datetime,
    *,
    settings: Settings | None = None,
    policy: Policy | None = None,
    now: datetime | None = None,
) -> list[Breach]:
    """Items that became overdue after ``since`` (up to now), after a :func:`sync`.

    With ``settings``, new scans are taken in first (the policy: ``policy``, else the
    settings' file; the acceptances: the settings' accept file); without, only the clock is
    applied to the items already known (and to new scans when ``policy`` is given).
    """
    moment = now or utcnow()
    _sync_for(store, settings, policy, moment)
    return _breaches(store, store.compliance_events(state="overdue", after=since, until=moment))


def claim_breaches(
    store: Store,
    *,
    settings: Settings | None = None,
    policy: Policy | None = None,
    now: datetime | None = None,
) -> list[Breach]:
    """The breaches not announced yet, each returned exactly once (across processes): what
    the service's executor notifies (``settings``, ``policy``: as :func:`breaches_since`). A
    breach found long after it happened (a history rebuilt from old scans) is never returned
    (:data:`BACKFILL_GRACE`)."""
    moment = now or utcnow()
    _sync_for(store, settings, policy, moment)
    return _breaches(store, store.claim_compliance_breaches(moment))


# --------------------------------------------------------------------------- the document


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def _end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


@dataclass(frozen=True)
class _Row:
    item: ComplianceItem
    state: ComplianceState
    accepted: Acceptance | None


def _item_json(row: _Row, now: datetime, today: date) -> dict[str, Any]:
    item = row.item
    end = item.fixed_at or now
    return {
        "host": item.host,
        "package": item.source_package,
        "advisory": item.advisory_id,
        "cves": list(item.cves),
        "severity": item.severity,
        "ssvc": item.ssvc,
        "kev": item.kev,
        "first_seen": _iso(item.first_seen),
        "due": item.due.isoformat() if item.due else None,
        "sla": item.sla,
        "fixed_at": _iso(item.fixed_at),
        "fixed_by": item.fixed_by,
        "confirmed_at": _iso(item.confirmed_at),
        "fix_candidate": item.candidate_run,
        "state": row.state,
        "accepted": row.accepted.summary() if row.accepted else None,
        "days_open": round(days_between(item.first_seen, end), 2),
        "days_overdue": (today - item.due).days
        if item.due and item.fixed_at is None and item.due < today
        else None,
    }


def _sla_json(rows: Sequence[_Row], today: date, now: datetime) -> dict[str, Any]:
    fixed = [r.item for r in rows if r.item.fixed_at is not None]
    durations = [days_between(i.first_seen, i.fixed_at) for i in fixed if i.fixed_at]
    on_time = sum(1 for i in fixed if i.due and i.fixed_at and _day(i.fixed_at) <= i.due)
    late = sum(1 for i in fixed if i.due and i.fixed_at and _day(i.fixed_at) > i.due)
    open_overdue = sum(1 for r in rows if r.state == "overdue")
    decided = on_time + late + open_overdue
    mean, median = ttr_stats(durations)
    return {
        "attainment": round(100.0 * on_time / decided, 1) if decided else None,
        "mttr_days": round(mean, 2) if mean is not None else None,
        "median_ttr_days": round(median, 2) if median is not None else None,
        "fixed": len(fixed),
        "fixed_within_sla": on_time,
        "fixed_late": late,
        "open_overdue": open_overdue,
        "fixed_by_patchpilot": sum(1 for i in fixed if i.fixed_by != "external"),
        "fixed_external": sum(1 for i in fixed if i.fixed_by == "external"),
    }


def _survival_json(rows: Sequence[_Row], now: datetime) -> dict[str, Any]:
    durations = [days_between(r.item.first_seen, r.item.fixed_at or now) for r in rows]
    fixed = [r.item.fixed_at is not None for r in rows]
    curve = kaplan_meier(durations, fixed) if durations else []
    horizon = max(durations, default=0.0)

    def at(days: float) -> float | None:
        if days > horizon:
            return None  # beyond the longest follow-up: not estimated
        value = 1.0
        for point in curve:
            if point.days <= days:
                value = point.survival
        return round(value, 4)

    median = km_median(curve)
    return {
        "curve": [
            {
                "days": round(p.days, 3),
                "open": round(p.survival, 4),
                "at_risk": p.at_risk,
                "fixed": p.fixed,
                "censored": p.censored,
            }
            for p in curve
        ],
        "items": len(rows),
        "fixed": sum(fixed),
        "censored": len(rows) - sum(fixed),
        "median_days": round(median, 2) if median is not None else None,
        "open_after": {"30": at(30), "90": at(90), "365": at(365)},
        "cyentia": {"median_days": CYENTIA_MEDIAN_DAYS, **CYENTIA_SURVIVAL},
    }


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _capacity_json(rows: Sequence[_Row], today: date) -> dict[str, Any]:
    items = [r.item for r in rows]
    months: list[dict[str, Any]] = []
    if items:
        month = _month_start(min(_day(i.first_seen) for i in items))
        while month <= today:
            start = datetime.combine(month, time(0), tzinfo=UTC)
            end = datetime.combine(_next_month(month), time(0), tzinfo=UTC)
            open_at_start = sum(
                1
                for i in items
                if i.first_seen < start and (i.fixed_at is None or i.fixed_at >= start)
            )
            opened = sum(1 for i in items if start <= i.first_seen < end)
            closed = sum(1 for i in items if i.fixed_at is not None and start <= i.fixed_at < end)
            workload = open_at_start + opened
            months.append(
                {
                    "month": month.strftime("%Y-%m"),
                    "open_at_start": open_at_start,
                    "opened": opened,
                    "closed": closed,
                    "rate": round(100.0 * closed / workload, 1) if workload else None,
                    "partial": _next_month(month) > today,
                }
            )
            month = _next_month(month)
    workload = sum(m["open_at_start"] + m["opened"] for m in months)
    closed = sum(m["closed"] for m in months)
    rate = round(100.0 * closed / workload, 1) if workload else None
    return {
        "rate": rate,
        "band": capacity_band(rate),
        "months": months[-MAX_MONTHS:],
        "cyentia": dict(CYENTIA_CAPACITY),
    }


def _history_json(rows: Sequence[_Row], today: date) -> list[dict[str, Any]]:
    items = [r.item for r in rows]
    if not items:
        return []
    first = min(_day(i.first_seen) for i in items)
    span = (today - first).days
    step = 1 if span <= MAX_HISTORY_POINTS else 7
    points = []
    day = first
    while True:
        end = _end_of(day)
        open_now = [
            i for i in items if i.first_seen < end and (i.fixed_at is None or i.fixed_at >= end)
        ]
        points.append(
            {
                "date": day.isoformat(),
                "open": len(open_now),
                "overdue": sum(1 for i in open_now if i.due is not None and i.due < day),
            }
        )
        if day >= today:
            break
        day = min(day + timedelta(days=step), today)
    return points


def compliance_document(
    store: Store,
    policy: Policy | None,
    *,
    acceptances: Acceptances | None = None,
    hosts: Mapping[str, Host] | None = None,
    inventory_hosts: Iterable[str] = (),
    host: str | None = None,
    overdue_only: bool = False,
    due_within: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ``patchpilot.compliance/v1`` document, after a :func:`sync`.

    Args:
        store: The store.
        policy: The policy (SLA for new items; ``None``: the history as it is).
        acceptances: The risk acceptances as they stand.
        hosts: The inventory's hosts (exposure, criticality).
        inventory_hosts: Host names to list even when never scanned (``unknown``).
        host: Only this host (hosts, items and every statistic).
        overdue_only: List only overdue items (and hosts with some).
        due_within: List only open items due within this many days (overdue ones included).
        now: The time (default: now, UTC).
    """
    moment = now or utcnow()
    today = _day(moment)
    sync(store, policy, acceptances=acceptances, hosts=hosts, now=moment)
    observed = store.compliance_observed()
    rows: list[_Row] = []
    for item in store.compliance_items(host=host):
        accepted = _accepted_by(acceptances, item) if item.fixed_at is None else None
        last = observed.get(item.host)
        state = item_state(
            fixed=item.fixed_at is not None,
            accepted=accepted is not None,
            due=item.due,
            today=today,
            host_unknown=last is not None and not last.ok,
        )
        rows.append(_Row(item, state, accepted))
    names = {r.item.host for r in rows} | set(observed) | set(inventory_hosts)
    if host is not None:
        names &= {host}
    soon_days = policy.sla_days.due_soon_days if policy is not None else 7
    horizon = today + timedelta(days=soon_days)
    host_rows = []
    for name in sorted(names):
        mine = [r for r in rows if r.item.host == name]
        open_rows = [r for r in mine if r.item.fixed_at is None]
        last = observed.get(name)
        dues = [r.item.due for r in open_rows if r.item.due is not None]
        host_rows.append(
            {
                "name": name,
                "host": name,
                "state": host_state([r.state for r in mine], observed=last is not None and last.ok),
                "open": len(open_rows),
                "overdue": sum(1 for r in open_rows if r.state == "overdue"),
                "accepted": sum(1 for r in open_rows if r.state == "accepted"),
                "due_soon": sum(
                    1
                    for r in open_rows
                    if r.state in ("non_compliant", "unknown")
                    and r.item.due is not None
                    and r.item.due <= horizon
                ),
                "oldest_due": min(dues).isoformat() if dues else None,
                "fixed": sum(1 for r in mine if r.item.fixed_at is not None),
                "last_scan": _iso(last.at) if last else None,
                "last_scan_ok": last.ok if last else None,
            }
        )
    listed = rows
    if overdue_only:
        listed = [r for r in listed if r.state == "overdue"]
        host_rows = [h for h in host_rows if h["overdue"]]
    if due_within is not None:
        limit = today + timedelta(days=due_within)
        listed = [
            r
            for r in listed
            if r.item.fixed_at is None
            and r.state != "accepted"
            and r.item.due is not None
            and r.item.due <= limit
        ]
    due_soon = [
        r
        for r in rows
        if r.state in ("non_compliant", "unknown")
        and r.item.due is not None
        and r.item.due <= horizon
    ]
    listed = sorted(listed, key=lambda r: (r.item.host, r.item.due or date.max, r.item.first_seen))
    due_soon = sorted(due_soon, key=lambda r: (r.item.due or date.max, r.item.host))
    return {
        "schema": SCHEMA,
        "generated_at": _iso(moment),
        "today": today.isoformat(),
        "filters": {"host": host, "overdue": overdue_only, "due_within": due_within},
        "policy": _policy_json(policy, soon_days),
        "summary": {
            "hosts": len(host_rows),
            "compliant_hosts": sum(1 for h in host_rows if h["state"] == "compliant"),
            "open": sum(1 for r in rows if r.item.fixed_at is None),
            "overdue": sum(1 for r in rows if r.state == "overdue"),
            "accepted": sum(1 for r in rows if r.state == "accepted"),
            "due_soon": len(due_soon),
            "fixed": sum(1 for r in rows if r.item.fixed_at is not None),
        },
        "hosts": host_rows,
        "sla": _sla_json(rows, today, moment),
        "items": [_item_json(r, moment, today) for r in listed],
        "due_soon": [_item_json(r, moment, today) for r in due_soon],
        "capacity": _capacity_json(rows, today),
        "survival": _survival_json(rows, moment),
        "history": _history_json(rows, today),
        "total": len(host_rows),
    }


def _policy_json(policy: Policy | None, soon_days: int) -> dict[str, Any] | None:
    if policy is None:
        return None
    sla = policy.sla_days
    return {
        "severity_days": sla.severity.model_dump(mode="json"),
        "ssvc_days": sla.ssvc.model_dump(mode="json", by_alias=True),
        "kev_days": sla.kev,
        "kev_due_date_binds": policy.kev.due_date_is_hard_bound,
        "exposure_days": sla.exposure.model_dump(mode="json"),
        "criticality_days": {str(k): v for k, v in sorted(sla.criticality.items())},
        "due_soon_days": soon_days,
    }


# --------------------------------------------------------------------------- renderers


CSV_COLUMNS: Final = (
    "host",
    "package",
    "advisory",
    "cves",
    "severity",
    "kev",
    "first_seen",
    "due",
    "sla",
    "state",
    "fixed_at",
    "fixed_by",
    "confirmed_at",
    "accepted_by",
    "accepted_until",
    "days_open",
    "days_overdue",
)


def render_csv(document: Mapping[str, Any]) -> str:
    """The document's items as CSV (one row per item; cells made safe by ``csv_cell``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for item in document["items"]:
        accepted = item.get("accepted") or {}
        row = {
            **{k: item.get(k) for k in CSV_COLUMNS},
            "cves": " ".join(item["cves"]),
            "accepted_by": accepted.get("by"),
            "accepted_until": accepted.get("until"),
        }
        writer.writerow({k: csv_cell(v) for k, v in row.items()})
    return buf.getvalue()


def render_html(document: Mapping[str, Any]) -> str:
    """The document as one self-contained HTML page (inline CSS and SVG, no script)."""
    from patchpilot.app.compliance_html import render

    return render(document)

"""What the web dashboard shows of the fleet, its findings and its settings (read models).

The dashboard (:mod:`patchpilot.web`) is another interface: it calls these functions, which
read through the store and the other use cases, and renders what they return. Everything
returned is plain data, untrusted strings (host output, feed text) included verbatim;
escaping is the interface's job.

- :func:`fleet_view`: every inventory host (also those never discovered: ``not scanned``) with
  OS, reachability, pending and security updates, open findings by severity, KEV count, the
  earliest SLA due date, SLA state, the compliance its latest patch run left it in, and
  whether it needs a reboot; filtered (name or tag substring, a state), sorted and paginated
  (server side, so 10,000 hosts cost one aggregate read each), with the fleet's history for
  the chart.
- :func:`findings_view`: open findings grouped per host and fix
  (:func:`patchpilot.app.grouping.fix_groups`), filtered and paginated, each with its risk
  factors, SSVC outcome, due date, provenance and the advisories' feed text.
- :func:`settings_view`: the feeds and their staleness, a policy summary, the service settings.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import structlog

from patchpilot.app import acceptances as acceptances_app
from patchpilot.app.grouping import fix_group_key, fix_groups
from patchpilot.core.feeds import FeedStatus
from patchpilot.core.inventory import Inventory
from patchpilot.core.models import FixStatus, Severity, utcnow
from patchpilot.core.settings import Settings
from patchpilot.core.store import FindingRecord, Store

__all__ = [
    "FINDINGS_PER_PAGE",
    "FLEET_PER_PAGE",
    "FLEET_SORTS",
    "FLEET_STATES",
    "NON_COMPLIANT",
    "FindingsView",
    "FleetHost",
    "FleetView",
    "HistoryPoint",
    "SettingsView",
    "findings_view",
    "fleet_view",
    "inventory_of",
    "settings_view",
]

log = structlog.get_logger(__name__)

FLEET_PER_PAGE: Final = 200
FINDINGS_PER_PAGE: Final = 100
MAX_PER_PAGE: Final = 1000
FLEET_SORTS: Final = ("name", "pending", "findings", "due")
"""``name`` A-Z; ``pending`` most updates first; ``findings`` worst first (critical, high...,
then the total); ``due`` earliest SLA due date first (hosts without one last)."""
FLEET_STATES: Final[dict[str, str]] = {
    "reachable": "reachable at the last discovery",
    "unreachable": "last discovery failed",
    "not-scanned": "never discovered",
    "overdue": "a finding is past its SLA due date",
    "due": "findings with a due date, none overdue",
    "clean": "no open findings",
    "kev": "a finding in CISA KEV",
    "reboot": "needs a reboot",
    "non-compliant": "its latest patch run left it non-compliant",
}
"""The fleet's ``state`` filter values and what each selects."""
NON_COMPLIANT: Final = frozenset(
    {"installed-pending-reboot", "installed-rejected", "missing", "failed", "unknown"}
)
"""Compliance states (:class:`patchpilot.core.plan.ComplianceState`) that are not compliant."""
SEVERITY_ORDER: Final = ("critical", "high", "medium", "low", "unimportant", "unknown")
_MAX_PATCH_RUNS: Final = 20
_HISTORY_DAYS: Final = 90
_HISTORY_POINTS: Final = 60


# --------------------------------------------------------------------------- fleet

_inventories: dict[tuple[str, str], tuple[tuple[int, int], Inventory]] = {}
_inventories_lock = threading.Lock()


def inventory_of(settings: Settings, path: Path) -> Inventory:
    """The inventory at ``path``, parsed again only when the file changed (size or mtime):
    a fleet page of 10,000 hosts does not re-read its YAML on every request.

    Raises:
        ConfigError: the file cannot be read or is invalid.
    """
    from patchpilot.core.inventory import load_inventory

    key = (str(path), settings.ssh.model_dump_json())
    try:
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = (-1, -1)
    with _inventories_lock:
        cached = _inventories.get(key)
    if cached is not None and cached[0] == version and version != (-1, -1):
        return cached[1]
    inventory = load_inventory(path, ssh=settings.ssh)
    with _inventories_lock:
        _inventories[key] = (version, inventory)
    return inventory


@dataclass(frozen=True)
class FleetHost:
    """One inventory host as the fleet page shows it."""

    name: str
    tags: tuple[str, ...]
    reachability: str
    """``ok``, ``unreachable``, ``failed`` (reached, discovery failed) or ``not scanned``."""
    os: str | None = None
    release: str | None = None
    last_seen: datetime | None = None
    error: str | None = None
    pending: int | None = None
    security: int | None = None
    findings: Mapping[str, int] = field(default_factory=dict)
    """severity -> open findings (only severities with some)."""
    open_findings: int = 0
    kev: int = 0
    actionable: int = 0
    oldest_due: date | None = None
    sla: str = "not scanned"
    """``overdue``, ``due``, ``no-sla`` (findings without a due date), ``clean`` or
    ``not scanned`` (never assessed)."""
    compliance: str | None = None
    compliance_run: str | None = None
    reboot: bool | None = None

    @property
    def scanned(self) -> bool:
        """Whether discovery ever reached it or findings were ever assessed for it."""
        return self.reachability != "not scanned" or self.sla != "not scanned"


@dataclass(frozen=True)
class HistoryPoint:
    """The fleet at the end of one day with a scan: hosts known, compliant, open findings."""

    day: date
    hosts: int
    compliant: int
    findings: int
    run_id: str | None
    """The day's latest run (None: today's point, the fleet as it stands now)."""

    @property
    def percent(self) -> float:
        """Share of the assessed hosts with no finding past its due date (0-100)."""
        return 100.0 * self.compliant / self.hosts if self.hosts else 100.0


@dataclass(frozen=True)
class FleetView:
    """One page of the fleet, and what it was cut from."""

    hosts: list[FleetHost]
    total: int
    matched: int
    page: int
    pages: int
    per_page: int
    sort: str
    q: str
    state: str
    summary: dict[str, int]
    history: list[HistoryPoint]
    today: date


def _release(os_id: str | None, version: str | None, codename: str | None) -> str | None:
    parts = [p for p in (os_id, version) if p]
    text = " ".join(parts)
    if codename:
        text = f"{text} ({codename})" if text else codename
    return text or None


def _sla(total: int, earliest: date | None, today: date) -> str:
    if earliest is not None:
        return "overdue" if earliest < today else "due"
    return "no-sla" if total else "clean"


def patch_compliance(
    settings: Settings, store: Store, hosts: set[str], *, max_runs: int = _MAX_PATCH_RUNS
) -> dict[str, tuple[str, str]]:
    """host -> (compliance state, run id) of the newest patch run that included it and has a
    run document (at most ``max_runs`` patch runs are read)."""
    from patchpilot.app import runs

    found: dict[str, tuple[str, str]] = {}
    read = 0
    for record in store.list_runs(limit=200):
        if record.kind != "run":
            continue
        included = set(record.params.get("hosts", ()) or ()) & hosts
        if not included - found.keys():
            continue
        if read >= max_runs:
            break
        read += 1
        try:
            document = runs.report(settings, store, record.run_id)
        except Exception as exc:  # a damaged checkpoint: the fleet page still renders
            log.warning("views.run_document_unreadable", run_id=record.run_id, error=str(exc))
            continue
        if not document:
            continue
        states = document.get("compliance") or {}
        for host in included - found.keys():
            if host in states:
                found[host] = (str(states[host]), record.run_id)
        if found.keys() >= hosts:
            break
    return found


def fleet_history(
    store: Store,
    today: date,
    *,
    days: int = _HISTORY_DAYS,
    points: int = _HISTORY_POINTS,
    now: Mapping[str, Any] | None = None,
) -> list[HistoryPoint]:
    """The fleet's SLA compliance and open findings at the end of each day with a scan or
    patch run (each host counted by its latest assessment so far; a finding counts as
    overdue on a day past its due date), the last ``points`` days; with ``now``
    (:meth:`~patchpilot.core.store.Store.findings_overview`), a last point for ``today``: the
    fleet as it stands (due dates that passed since the last scan count as overdue)."""
    history = _day_points(store, today, days)
    if now:
        current = HistoryPoint(
            day=today,
            hosts=len(now),
            compliant=sum(
                1 for f in now.values() if f.earliest_due is None or f.earliest_due >= today
            ),
            findings=sum(f.total for f in now.values()),
            run_id=None,
        )
        if history and history[-1].day == today:
            history[-1] = current
        else:
            history.append(current)
    return history[-points:]


_history_cache: dict[tuple[object, ...], list[HistoryPoint]] = {}
_history_lock = threading.Lock()


def _day_points(store: Store, today: date, days: int) -> list[HistoryPoint]:
    """The points of :func:`fleet_history` from the stored scans (cached until the store's
    runs, finding sets or risk change: reading every host of every recent scan is the
    fleet page's dearest read)."""
    key = (*store.assessments_version(), today, days)
    with _history_lock:
        cached = _history_cache.get(key)
    if cached is not None:
        return list(cached)
    since = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=days)
    latest: dict[str, tuple[int, bool]] = {}
    history: list[HistoryPoint] = []
    findings = overdue = 0  # running totals over ``latest``
    for item in store.assessment_history(since):
        day = item.started_at.date()
        before = latest.get(item.host)
        if before is not None:
            findings -= before[0]
            overdue -= before[1]
        latest[item.host] = (item.findings, item.overdue)
        findings += item.findings
        overdue += item.overdue
        point = HistoryPoint(
            day=day,
            hosts=len(latest),
            compliant=len(latest) - overdue,
            findings=findings,
            run_id=item.run_id,
        )
        if history and history[-1].day == day:
            history[-1] = point
        else:
            history.append(point)
    with _history_lock:
        if len(_history_cache) > 16:
            _history_cache.clear()
        _history_cache[key] = history
    return list(history)


def _pages(matched: int, per_page: int) -> int:
    return max(1, math.ceil(matched / per_page))


def _page_bounds(page: int, per_page: int) -> tuple[int, int]:
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    return max(1, page), per_page


def _selects(host: FleetHost, state: str, today: date) -> bool:
    if state == "reachable":
        return host.reachability == "ok"
    if state == "unreachable":
        return host.reachability in ("unreachable", "failed")
    if state == "not-scanned":
        return not host.scanned
    if state in ("overdue", "due", "clean"):
        return host.sla == state
    if state == "kev":
        return host.kev > 0
    if state == "reboot":
        return bool(host.reboot)
    if state == "non-compliant":
        return host.compliance in NON_COMPLIANT
    return True


def _severity_key(host: FleetHost) -> tuple[int, ...]:
    return (*tuple(-host.findings.get(s, 0) for s in SEVERITY_ORDER[:4]), -host.open_findings)


def _sorted(hosts: list[FleetHost], sort: str) -> list[FleetHost]:
    if sort == "pending":
        return sorted(hosts, key=lambda h: (-(h.pending or 0), -(h.security or 0), h.name))
    if sort == "findings":
        return sorted(hosts, key=lambda h: (_severity_key(h), h.name))
    if sort == "due":
        return sorted(hosts, key=lambda h: (h.oldest_due is None, h.oldest_due or date.max, h.name))
    return sorted(hosts, key=lambda h: h.name)


def fleet_view(
    settings: Settings,
    store: Store,
    inventory: Inventory,
    *,
    sort: str = "name",
    q: str = "",
    state: str = "",
    page: int = 1,
    per_page: int = FLEET_PER_PAGE,
    today: date | None = None,
    history: bool = True,
) -> FleetView:
    """One page of the fleet: every host of ``inventory``, filtered by ``q`` (a substring of
    the name, a tag or a group, any case) and ``state`` (:data:`FLEET_STATES`), sorted by
    ``sort`` (:data:`FLEET_SORTS`; anything else: name)."""
    day = today or utcnow().date()
    page, per_page = _page_bounds(page, per_page)
    sort = sort if sort in FLEET_SORTS else "name"
    state = state if state in FLEET_STATES else ""
    discovered = store.discovery_overview()
    assessed = store.findings_overview()
    names = set(inventory.hosts)
    compliance = patch_compliance(settings, store, names)
    rows: list[FleetHost] = []
    for name, host in inventory.hosts.items():
        seen = discovered.get(name)
        found = assessed.get(name)
        if seen is None:
            reachability = "not scanned"
        elif seen.last_ok:
            reachability = "ok"
        else:
            reachability = "unreachable" if seen.error_type == "HostConnectError" else "failed"
        total = found.total if found else 0
        state_of = compliance.get(name)
        rows.append(
            FleetHost(
                name=name,
                tags=tuple(sorted(host.tags | host.groups)),
                reachability=reachability,
                os=seen.os_name if seen else None,
                release=_release(seen.os_id, seen.os_version, seen.os_codename) if seen else None,
                last_seen=seen.last_at if seen else None,
                error=seen.error if seen else None,
                pending=seen.pending if seen else None,
                security=seen.security if seen else None,
                findings={s.value: n for s, n in found.by_severity.items() if n} if found else {},
                open_findings=total,
                kev=found.kev if found else 0,
                actionable=found.actionable if found else 0,
                oldest_due=found.earliest_due if found else None,
                sla=_sla(total, found.earliest_due, day) if found else "not scanned",
                compliance=state_of[0] if state_of else None,
                compliance_run=state_of[1] if state_of else None,
                reboot=seen.reboot_required if seen else None,
            )
        )
    summary = {
        "hosts": len(rows),
        "not_scanned": sum(not h.scanned for h in rows),
        "unreachable": sum(h.reachability in ("unreachable", "failed") for h in rows),
        "overdue": sum(h.sla == "overdue" for h in rows),
        "findings": sum(h.open_findings for h in rows),
        "kev": sum(h.kev for h in rows),
        "reboot": sum(bool(h.reboot) for h in rows),
        "non_compliant": sum(h.compliance in NON_COMPLIANT for h in rows),
    }
    needle = q.strip().lower()
    if needle:
        rows = [
            h for h in rows if needle in h.name.lower() or any(needle in t.lower() for t in h.tags)
        ]
    if state:
        rows = [h for h in rows if _selects(h, state, day)]
    rows = _sorted(rows, sort)
    pages = _pages(len(rows), per_page)
    page = min(page, pages)
    start = (page - 1) * per_page
    return FleetView(
        hosts=rows[start : start + per_page],
        total=len(inventory.hosts),
        matched=len(rows),
        page=page,
        pages=pages,
        per_page=per_page,
        sort=sort,
        q=q,
        state=state,
        summary=summary,
        history=fleet_history(store, day, now=assessed) if history else [],
        today=day,
    )


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class FindingsView:
    """One page of fix groups (one host and one fix each) and what it was cut from."""

    groups: list[dict[str, Any]]
    """:func:`~patchpilot.app.grouping.fix_groups` entries plus ``factors`` (the top
    finding's risk factors) and ``summaries`` (advisory id -> feed text)."""
    matched: int
    findings: int
    page: int
    pages: int
    per_page: int
    hosts: list[str]
    """Every host with open findings (for the host filter)."""


def findings_view(
    settings: Settings,
    store: Store,
    *,
    host: str | None = None,
    severity: Severity | None = None,
    kev: bool | None = None,
    fix_state: FixStatus | None = None,
    due_before: date | None = None,
    package: str | None = None,
    page: int = 1,
    per_page: int = FINDINGS_PER_PAGE,
) -> FindingsView:
    """Open findings (each host's latest assessment) grouped per host and fix, highest risk
    first; ``due_before``: groups due on or before that day; ``package``: a substring of the
    source or a binary package name (any case)."""
    from patchpilot.app.exports.hosts import host_os

    page, per_page = _page_bounds(page, per_page)
    records = store.findings(host=host, min_severity=severity, kev=kev, fix_status=fix_state)
    accepts = acceptances_app.load(settings)
    accepted = [accepts.for_finding(r.finding) for r in records] if accepts else []
    os_of = host_os(store, {r.finding.host for r in records})
    ecosystems = {
        name: os.family.ecosystem for name, os in os_of.items() if os.family.ecosystem is not None
    }
    groups = fix_groups(records, ecosystems, [a.until if a else None for a in accepted] or None)
    if due_before is not None:
        limit = due_before.isoformat()
        groups = [g for g in groups if g["due"] is not None and g["due"] <= limit]
    if package:
        needle = package.strip().lower()
        groups = [
            g
            for g in groups
            if needle in g["source_package"].lower()
            or any(needle in p.lower() for p in g["packages"])
        ]
    pages = _pages(len(groups), per_page)
    page = min(page, pages)
    shown = groups[(page - 1) * per_page : page * per_page]
    _explain(store, records, shown)
    return FindingsView(
        groups=shown,
        matched=len(groups),
        findings=len(records),
        page=page,
        pages=pages,
        per_page=per_page,
        hosts=sorted(store.findings_overview()),
    )


def _explain(store: Store, records: Sequence[FindingRecord], groups: list[dict[str, Any]]) -> None:
    """Add each group's ``factors`` (its highest-risk finding's) and ``summaries``."""
    members: dict[tuple[str, str, str, str], list[FindingRecord]] = {}
    for record in records:
        members.setdefault(fix_group_key(record), []).append(record)
    summaries = store.advisory_summaries(
        (g["source_package"], a) for g in groups for a in g["advisories"]
    )
    for group in groups:
        kind = "fix" if group["fixed_version"] else group["fix_state"]
        key = (group["host"], group["source_package"], group["installed_version"], kind)
        mine = members.get(key, [])
        top = max(mine, key=lambda m: m.risk.score if m.risk else -1.0, default=None)
        group["factors"] = (
            [f.model_dump(mode="json") for f in top.risk.factors]
            if top is not None and top.risk
            else []
        )
        group["summaries"] = {
            a: summaries[(group["source_package"], a)]
            for a in group["advisories"]
            if (group["source_package"], a) in summaries
        }


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SettingsView:
    """The read-only settings page: feeds, a policy summary, the service settings."""

    feeds: list[FeedStatus]
    policy_path: str
    policy: dict[str, Any]
    service: dict[str, Any]
    home: str


def settings_view(settings: Settings, store: Store, policy_path: Path) -> SettingsView:
    """The feeds (as ``patchpilot feeds status``), the policy in force summarised, and the
    service's settings (never a secret: the LLM and notification sections are left out)."""
    from patchpilot.core.policy import load_policy

    policy = load_policy(policy_path)
    schedule = policy.schedule
    summary: dict[str, Any] = {
        "rings": [
            {"name": r.name, **{k: v for k, v in r.model_dump(mode="json").items() if k != "name"}}
            for r in schedule.rings
        ],
        "windows": [w.model_dump(mode="json") for w in schedule.windows],
        "always_open": schedule.is_always_open,
        "timezone": schedule.timezone,
        "blackouts": len(schedule.blackouts),
        "reboot": str(schedule.reboot.value),
        "approvals": policy.approvals.model_dump(mode="json"),
        "health_checks": len(policy.health.checks),
        "health_check_names": [c.name for c in policy.health.checks],
        "analysis": policy.analysis.model_dump(mode="json") if policy.analysis.enabled else None,
        "sla_days": policy.sla_days.model_dump(mode="json"),
    }
    return SettingsView(
        feeds=store.feed_status(),
        policy_path=str(policy_path),
        policy=summary,
        service=settings.service.model_dump(mode="json"),
        home=str(settings.home),
    )

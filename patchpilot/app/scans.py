"""Scan use cases: start a scan, resume one, read its report (gates: :mod:`patchpilot.app.gates`).

Every interface (the CLI now, the REST API next) calls these; each takes the acting identity
(``actor``: the OS user for the CLI, an authenticated user for the service). Start and resume
build their context with the one factory (:func:`patchpilot.app.contexts.scan_context`).

The scan graph (langgraph) and the feeds (httpx) load only when a scan starts or resumes or a
report needs them: reading findings from the store stays quick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from patchpilot.app.exports.hosts import host_os
from patchpilot.app.report import report_document
from patchpilot.core.acceptance import Acceptances
from patchpilot.core.errors import UnknownTargetError
from patchpilot.core.models import FixStatus, Host, Severity, utcnow
from patchpilot.core.policy import load_policy
from patchpilot.core.schedules import Trigger
from patchpilot.core.settings import Settings
from patchpilot.core.store import FindingRecord, HostResult, Store

__all__ = [
    "ScanReport",
    "findings",
    "latest_run_id",
    "report",
    "resume",
    "start",
]

log = structlog.get_logger(__name__)

Progress = Callable[[str, str, bool], None]
"""``advance(stage, host, ok)``: called from worker threads as hosts finish a stage."""


@dataclass(frozen=True)
class ScanReport:
    """A scan's report: the ``patchpilot.report/v1`` document and what it was built from."""

    document: dict[str, Any]
    records: Sequence[FindingRecord]
    hosts: Sequence[HostResult]
    acceptances: Acceptances | None = None
    """The risk acceptances applied (``document`` marks the findings they cover)."""

    @property
    def failed(self) -> list[HostResult]:
        """The hosts that failed (unreachable or otherwise)."""
        return [h for h in self.hosts if not h.ok]


def start(
    settings: Settings,
    store: Store,
    hosts: list[Host],
    *,
    actor: str,
    target: str,
    offline: bool = False,
    refresh: bool = False,
    on_progress: Progress | None = None,
    trigger: Trigger = "cli",
    schedule_id: str | None = None,
) -> str:
    """Scan ``hosts`` to completion; returns the run id.

    Feeds are fetched first when the settings allow it (``feeds.auto_update``), ``offline`` is
    false and the store holds no advisories yet. ``trigger`` (and ``schedule_id`` for a
    schedule) is recorded in the run's params and summary.
    """
    from patchpilot.app.contexts import scan_context
    from patchpilot.graphs.scan import start_scan

    policy = load_policy(settings.policy_path)
    fetch = settings.feeds.auto_update and not offline and not store.has_advisories()
    context = scan_context(settings, store, policy)
    context.on_progress = on_progress
    log.info("scan.requested", actor=actor, target=target, hosts=len(hosts), trigger=trigger)
    run_id, _summary = start_scan(
        hosts,
        context,
        target=target,
        offline=not fetch,
        refresh=refresh,
        trigger=trigger,
        schedule_id=schedule_id,
    )
    from patchpilot.app.compliance import record_scan

    record_scan(settings, store, run_id, hosts)
    return run_id


def resume(settings: Settings, store: Store, run_id: str, *, actor: str) -> dict[str, Any]:
    """Continue an interrupted scan from its last checkpoint; returns its summary.

    Raises:
        UnknownTargetError: no checkpoint for ``run_id``.
        RunBusyError: another process is driving it.
    """
    from patchpilot.app.contexts import scan_context
    from patchpilot.graphs.scan import resume_scan

    context = scan_context(settings, store, load_policy(settings.policy_path))
    log.info("scan.resume_requested", actor=actor, run_id=run_id)
    try:
        summary = resume_scan(run_id, context)
    except LookupError as exc:
        raise UnknownTargetError(str(exc), key="run_id") from exc
    from patchpilot.app.compliance import record_scan

    record_scan(settings, store, run_id)
    return summary


def report(store: Store, run_id: str, *, acceptances: Acceptances | None = None) -> ScanReport:
    """The report of a scan (or of a patch run's scan part).

    ``acceptances`` (:func:`patchpilot.app.acceptances.load`) marks the findings live risk
    acceptances cover; they stay in the report.

    Raises:
        UnknownTargetError: no such run.
    """
    run = store.get_run(run_id)
    if run is None:
        raise UnknownTargetError(f"no run {run_id!r}; see `patchpilot runs`", key="run_id")
    records = store.findings(run_id=run_id)
    hosts = store.host_results(run_id, details=True)
    mode = run.summary.get("mode") if run.summary else None
    from patchpilot.agents.sourcing import NO_FEEDS_HINT

    document = report_document(
        run=run,
        records=records,
        feeds=store.feed_status(),
        hosts=hosts,
        mode=mode,
        hint=NO_FEEDS_HINT if mode == "repository-metadata" else None,
        generated_at=utcnow(),
        acceptances=acceptances,
    )
    return ScanReport(document=document, records=records, hosts=hosts, acceptances=acceptances)


def findings(
    store: Store,
    *,
    run_id: str | None = None,
    host: str | None = None,
    min_severity: Severity | None = None,
    kev: bool | None = None,
    fix_status: FixStatus | None = None,
    actionable: bool | None = None,
    acceptances: Acceptances | None = None,
) -> ScanReport:
    """Stored findings (each host's latest scan unless ``run_id``), as a report without a run.

    ``acceptances`` marks the findings live risk acceptances cover (they stay listed).

    Raises:
        UnknownTargetError: ``run_id`` names no run.
    """
    if run_id is not None and store.get_run(run_id) is None:
        raise UnknownTargetError(f"no run {run_id!r}; see `patchpilot runs`", key="--run")
    records = store.findings(
        run_id=run_id,
        host=host,
        min_severity=min_severity,
        kev=kev,
        fix_status=fix_status,
        actionable=actionable,
    )
    document = report_document(
        run=None,
        records=records,
        feeds=store.feed_status(),
        generated_at=utcnow(),
        os_by_host=host_os(store, {r.finding.host for r in records}, run_id=run_id),
        acceptances=acceptances,
    )
    return ScanReport(document=document, records=records, hosts=(), acceptances=acceptances)


def latest_run_id(store: Store) -> str:
    """The newest scan or patch run (what ``report`` shows by default).

    Raises:
        UnknownTargetError: there is no run yet.
    """
    scans = [r for r in store.list_runs(limit=100) if r.kind in ("scan", "run")]
    if not scans:
        raise UnknownTargetError("no run yet; run `patchpilot scan`", key="run_id")
    return scans[0].run_id

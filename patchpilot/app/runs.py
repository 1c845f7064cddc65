"""Patch-run use cases: start a run, continue (resume) one, and its documents.

Every interface calls these; each takes the acting identity (``actor``). A run's start and
every continuation build their context with the one factory
(:func:`patchpilot.app.contexts.run_context`), so the audit log names ``actor``, and record
each stage's start and end in the store (:class:`~patchpilot.graphs.run.StoreStages`: the run
document's ``stages`` and ``/metrics`` read them). Deciding an approval is
:mod:`patchpilot.app.approvals`; cancelling a run is :func:`cancel` (the CLI's ``cancel`` and
the service's executor).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from patchpilot.app import acceptances
from patchpilot.app.approvals import continue_waiting_run, decision_of, expire
from patchpilot.app.contexts import run_context, run_context_factory
from patchpilot.app.scans import report as scan_report
from patchpilot.core.audit import AuditLog
from patchpilot.core.errors import StoreError, UnknownTargetError
from patchpilot.core.models import Host, utcnow
from patchpilot.core.policy import Policy
from patchpilot.core.schedules import Occurrence, Trigger
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store
from patchpilot.graphs.run import (
    RunBusyError,
    RunContext,
    RunResult,
    RunSnapshot,
    StageRecorder,
    StoreStages,
    load_run_state,
    result_of,
    run_lock,
    start_run,
)
from patchpilot.graphs.run_document import run_document, run_exit_code

__all__ = [
    "cancel",
    "combine",
    "document",
    "exit_code",
    "patch_run_report",
    "report",
    "resume",
    "start",
]

log = structlog.get_logger(__name__)

Progress = Callable[[str, str, bool], None]


def recording(context: RunContext, store: Store) -> RunContext:
    """``context`` recording its stages in ``store`` (unless it records them somewhere)."""
    if type(context.stages) is StageRecorder:
        context.stages = StoreStages(store, context.clock)
    return context


def start(
    settings: Settings,
    store: Store,
    hosts: list[Host],
    *,
    actor: str,
    target: str,
    policy: Policy,
    only: list[tuple[str, str | None]] | None = None,
    dry_run: bool = False,
    offline: bool = False,
    refresh: bool = False,
    limit: str | None = None,
    on_progress: Progress | None = None,
    not_before: datetime | None = None,
    run_id: str | None = None,
    make_context: Callable[[Policy], RunContext] | None = None,
    trigger: Trigger = "cli",
    occurrence: Occurrence | None = None,
    security_only: bool = False,
    rollback: dict[str, str] | None = None,
    must_approve: str | None = None,
) -> RunResult:
    """Start a patch run of ``hosts`` and drive it until it ends or waits (approval, window,
    not-before time).

    Feeds are fetched first when the settings allow it, ``offline`` is false and the store
    holds no advisories yet. ``not_before`` (timezone-aware): no host starts before it; the
    deployment starts at ``max(not_before, the next window opening)`` and the run waits
    (``waiting: window``) until ``resume`` finds that time has come. ``run_id``: the id to use
    (the service's executor creates it when the run is queued; default a new one).
    ``make_context``: the context factory (default :func:`run_context` as ``actor``; tests and
    the executor inject one). ``trigger``: what started the run (recorded in its document);
    ``occurrence``: the schedule occurrence that started it (``trigger`` is then ``schedule``):
    no host starts before its start (``not_before``) or from its cutoff on, and the approval
    expires at its window's end at the latest. ``security_only``: plan only updates that close
    a known security advisory (the others are excluded, ``not a security update``);
    ``rollback`` and ``must_approve`` as :func:`~patchpilot.graphs.run.start_run` (the chat).
    """
    if occurrence is not None:
        trigger = "schedule"
        not_before = max(not_before or occurrence.at, occurrence.at)
    fetch = settings.feeds.auto_update and not offline and not store.has_advisories()
    if make_context is None:
        context = run_context(settings, store, policy, actor=actor)
    else:
        context = make_context(policy)
    recording(context, store)
    context.on_progress = on_progress
    log.info(
        "run.requested",
        actor=actor,
        target=target,
        hosts=len(hosts),
        dry_run=dry_run,
        not_before=not_before.isoformat() if not_before else None,
    )
    return start_run(
        hosts,
        context,
        target=target,
        policy=policy,
        only=only,
        dry_run=dry_run,
        offline=not fetch,
        refresh=refresh,
        limit=limit,
        not_before=not_before,
        run_id=run_id,
        trigger=trigger,
        schedule_id=occurrence.schedule_id if occurrence else None,
        window_end=occurrence.window_end if occurrence else None,
        cutoff_at=occurrence.cutoff_at if occurrence else None,
        security_only=security_only,
        rollback=rollback,
        must_approve=must_approve,
    )


def resume(
    settings: Settings,
    store: Store,
    run_id: str,
    *,
    actor: str,
    make_context: Callable[[Policy], RunContext] | None = None,
) -> RunResult:
    """Continue a patch run: after a crash, once decided, or to re-check the window.

    A run waiting for an approval that is decided (or has expired, recorded here) continues
    with that decision; one still pending stays waiting. ``make_context``: the context factory
    for the run's frozen policy (default :func:`run_context_factory` as ``actor``).

    Raises:
        UnknownTargetError: no checkpoint for ``run_id``.
        RunBusyError: another process is driving it.
    """
    record = store.approval(run_id)
    snapshot = load_run_state(run_id, settings)
    if snapshot is None:
        raise UnknownTargetError(f"no checkpoint for run {run_id}", key="run_id")
    decision = None
    if record is not None and any(i.get("kind") == "approval" for i in snapshot.interrupts):
        if record.status == "pending" and record.expired_at(utcnow()):
            expire(store, settings, record, utcnow())
            record = store.approval(run_id)
        if record is not None and record.status != "pending":
            decision = decision_of(record)
    log.info("run.resume_requested", actor=actor, run_id=run_id)
    factory = make_context or run_context_factory(settings, store, actor=actor)
    return continue_waiting_run(
        settings, store, run_id, decision, lambda policy: recording(factory(policy), store)
    )


def cancel(settings: Settings, store: Store, run_id: str, *, actor: str) -> str:
    """Cancel a run; returns what happened: ``cancelled``, ``rejected`` or ``cancelling``.

    Queued (its start never claimed): ``cancelled`` before it starts. Awaiting approval: the
    approval is rejected by ``actor`` (the run ends ``rejected`` when it is continued: the
    service's next tick, or ``patchpilot resume``). Waiting for its window: ``cancelled``.
    Running (a worker or a CLI drives it now): the request is recorded in the store and the run
    stops at its next safe point: no new host starts, a host being installed finishes (health
    checks, rollback if needed), and the run ends ``cancelled`` with every host not started
    ``skipped`` (``cancelled by ACTOR``): ``cancelling``. Every cancel is audit-logged.

    Raises:
        StoreError: unknown run, or it has ended already.
        RunBusyError: a scan being driven right now (scans have no safe point; it ends soon).
    """
    run = store.get_run(run_id)
    if run is None:
        raise StoreError(f"unknown run {run_id!r}")
    audit = AuditLog.for_settings(settings, actor=actor, run_id=run_id)
    job = store.cancel_queued_job(run_id)
    if job is not None and job.kind in ("start", "scan"):
        return _cancelled(store, audit, run_id, actor, run.status)
    busy = store.active_job(run_id) is not None or _locked(settings, run_id)
    if run.status == "awaiting_approval" and not busy:
        record = store.approval(run_id)
        if record is not None and record.status == "pending":
            store.decide_approval(
                run_id,
                "rejected",
                by=actor,
                comment="cancelled",
                at=utcnow(),
                via="patchpilot",
                words="cancel",
            )
        audit.record("run.cancelled", details={"was": run.status})
        store.enqueue_continue(run_id, actor=actor, reason="cancelled")
        return "rejected"
    if run.status == "waiting_window" and not busy:
        return _cancelled(store, audit, run_id, actor, run.status)
    if run.status in ("queued", "running", "interrupted", "awaiting_approval", "waiting_window"):
        if run.kind != "run":
            raise RunBusyError(f"scan {run_id} is being driven right now; it ends by itself")
        first = store.request_cancel(run_id, by=actor)
        if first:
            audit.record("run.cancel_requested", details={"was": run.status})
        log.info("run.cancel_requested", run_id=run_id, actor=actor, first=first)
        return "cancelling"
    raise StoreError(f"run {run_id} has ended already ({run.status}); nothing to cancel")


def _cancelled(store: Store, audit: AuditLog, run_id: str, actor: str, was: str) -> str:
    store.finish_run(run_id, status="cancelled", summary={"status": "cancelled", "by": actor})
    audit.record("run.cancelled", details={"was": was})
    log.info("run.cancelled", run_id=run_id, actor=actor, was=was)
    return "cancelled"


def _locked(settings: Settings, run_id: str) -> bool:
    """True if a process holds the run's lock (it is driving the run right now)."""
    try:
        with run_lock(settings, run_id):
            return False
    except RunBusyError:
        return True


def stages(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The run document's ``stages``: each stage's start, end and seconds, in start order."""
    return [s.document() for s in store.run_stages(run_id)]


def impact(store: Store, snapshot: RunSnapshot | None) -> dict[str, Any] | None:
    """The run document's ``impact``: each wave's predicted impact (hosts in flight, services
    restarted, expected duration from past deployments of the same packages;
    :func:`patchpilot.app.analytics.predicted_impact`); None before the run has a plan."""
    from patchpilot.app.analytics import predicted_impact

    state = snapshot.state if snapshot is not None else None
    if state is None or state.plan is None or not state.plan.items:
        return None
    schedule = state.policy.schedule
    return predicted_impact(
        state.plan,
        store,
        rings=[(r.name, r.hosts) for r in state.rings] or None,
        serial=schedule.waves,
        max_concurrency=schedule.rate.max_concurrency,
    ).document()


def document(settings: Settings, store: Store, result: RunResult) -> dict[str, Any]:
    """The run document (``patchpilot.run/v1``) of ``result``."""
    snapshot = load_run_state(result.run_id, settings)
    doc = run_document(
        result, snapshot, store.deployments(result.run_id), store.approval(result.run_id)
    )
    return {**doc, "stages": stages(store, result.run_id), "impact": impact(store, snapshot)}


def exit_code(doc: dict[str, Any]) -> int:
    """The exit code of a run document (:func:`~patchpilot.graphs.run_document.run_exit_code`)."""
    return run_exit_code(doc)


def report(settings: Settings, store: Store, run_id: str) -> dict[str, Any] | None:
    """The run document of a patch run from its checkpoint (``None``: no checkpoint).

    A run whose step raised says why (the reason recorded in the store when it failed).
    """
    snapshot = load_run_state(run_id, settings)
    if snapshot is None:
        return None
    run = store.get_run(run_id)
    failure = None
    if run is not None and run.status == "failed" and run.summary:
        failure = run.summary.get("reason")
    result = result_of(run_id, snapshot, failure=failure)
    doc = run_document(result, snapshot, store.deployments(run_id), store.approval(run_id))
    return {**doc, "stages": stages(store, run_id), "impact": impact(store, snapshot)}


def patch_run_report(
    settings: Settings, store: Store, run_id: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``report RUN_ID --format json`` of a patch run, and its run document.

    See :func:`combine`; without a checkpoint, the scan report alone (and ``None``).
    """
    details = report(settings, store, run_id)
    scan = scan_report(store, run_id, acceptances=acceptances.load(settings)).document
    if details is None:
        return scan, None
    scan["data"]["hint"] = None  # a patch run's report never carried the scan's hint
    return combine(scan, details), details


def combine(scan: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The report of a patch run: its scan report (``patchpilot.report/v1``) plus ``status``,
    ``reason``, ``plan``, ``approval``, ``rings``, ``deployments``, ``unreachable`` and
    ``analysis`` of its run document, and ``compliance`` on every entry of ``hosts[]``."""
    combined = dict(scan)
    combined["hosts"] = [
        {**host, "compliance": run["compliance"].get(host["name"], "not-applicable")}
        for host in scan["hosts"]
    ]
    for key in ("status", "reason", "plan", "approval", "rings", "deployments", "unreachable"):
        combined[key] = run[key]
    combined["analysis"] = run.get("analysis", [])
    return combined

"""Deciding a run's approval checkpoint, from any process (CLI, chat, scheduler).

A decision is recorded atomically in the store (two approvers cannot both win), audit-logged
with who and when, and then the run continues in this process until it ends or waits again.
An approval past its expiry is recorded ``expired`` and the run ends ``rejected``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

import structlog

from graphs.run import ApprovalDecision, RunContext, RunResult, continue_run, load_run_state
from patchpilot.audit import AuditLog, current_actor
from patchpilot.errors import UnknownTargetError
from patchpilot.models import utcnow
from patchpilot.policy import Policy
from patchpilot.settings import Settings
from patchpilot.store import ApprovalRecord, Store, StoreError

__all__ = ["continue_waiting_run", "decide", "decision_of", "expire"]

log = structlog.get_logger(__name__)


def expire(store: Store, settings: Settings, record: ApprovalRecord, now: datetime) -> None:
    """Record an overdue approval as ``expired`` (audit-logged)."""
    store.decide_approval(record.run_id, "expired", by="patchpilot", at=now)
    AuditLog.for_settings(settings, run_id=record.run_id).record(
        "approval.expired",
        details={"plan_id": record.plan_id, "expires_at": record.expires_at.isoformat()},
    )
    log.info("approval.expired", run_id=record.run_id)


def decision_of(record: ApprovalRecord) -> ApprovalDecision:
    """The graph's resume value for a decided approval.

    Raises:
        StoreError: the approval is still pending.
    """
    if record.status == "pending" or record.decided_at is None or record.decided_by is None:
        raise StoreError(f"the approval of run {record.run_id} is not decided")
    return ApprovalDecision(
        status=record.status,
        by=record.decided_by,
        comment=record.comment,
        at=record.decided_at,
        content_hash=record.content_hash,
    )


def continue_waiting_run(
    settings: Settings,
    store: Store,
    run_id: str,
    decision: ApprovalDecision | None,
    make_context: Callable[[Policy], RunContext],
) -> RunResult:
    """Continue ``run_id`` (with its frozen policy) in this process."""
    snapshot = load_run_state(run_id, settings)
    if snapshot is None:
        raise UnknownTargetError(f"no checkpoint for run {run_id}; see `patchpilot runs`")
    return continue_run(run_id, make_context(snapshot.state.policy), decision=decision)


def decide(
    settings: Settings,
    store: Store,
    run_id: str,
    status: Literal["approved", "rejected"],
    *,
    comment: str | None,
    make_context: Callable[[Policy], RunContext],
    actor: str | None = None,
) -> RunResult:
    """Approve or reject a run's pending approval, then continue the run.

    Raises:
        UnknownTargetError: no such run, or it never asked for approval.
        StoreError: it was decided already (and the run went on).
    """
    record = store.approval(run_id)
    if record is None:
        if store.get_run(run_id) is None:
            raise UnknownTargetError(f"no run {run_id!r}; see `patchpilot runs`", key="run_id")
        raise UnknownTargetError(f"run {run_id} never asked for approval", key="run_id")
    now = utcnow()
    if record.status == "pending" and record.expired_at(now):
        expire(store, settings, record, now)
    elif record.status == "pending":
        who = actor or current_actor()
        record = store.decide_approval(run_id, status, by=who, comment=comment, at=now)
        AuditLog.for_settings(settings, run_id=run_id, actor=who).record(
            f"approval.{'granted' if status == 'approved' else 'rejected'}",
            details={
                "plan_id": record.plan_id,
                "content_hash": record.content_hash,
                "comment": comment,
            },
        )
    else:
        snapshot = load_run_state(run_id, settings)
        waiting = snapshot is not None and any(
            i.get("kind") == "approval" for i in snapshot.interrupts
        )
        if not waiting:
            raise StoreError(
                f"run {run_id} was already {record.status} by {record.decided_by} at "
                f"{record.decided_at}"
            )
        # Decided, but the deciding process died before continuing the run: continue it now.
    decided = store.approval(run_id)
    assert decided is not None
    return continue_waiting_run(settings, store, run_id, decision_of(decided), make_context)

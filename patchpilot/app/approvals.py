"""Deciding a run's approval checkpoint, from any process (CLI, chat, scheduler).

A decision is recorded atomically in the store (two approvers cannot both win) and audit-logged
with who and when (:func:`record_decision`); continuing the run is a separate step
(:func:`continue_waiting_run`), and :func:`decide` does both, the run continuing in this
process until it ends or waits again.
An approval past its expiry is recorded ``expired`` and the run ends ``rejected``.

Guarantees (each enforced here, the one entry point every interface uses):

- **Only a person's explicit words decide.** :func:`decide` takes a :class:`DecisionSource`
  saying which parser read the decision (``cli``: the ``approve``/``reject`` command;
  ``grammar``: chat words read by the deterministic grammar) and the words themselves; there
  is no ``llm`` source, so no model answer can ever approve or reject. Both are recorded with
  the decision (store and audit log).
- **Only an identity allowed to decide**: the run's frozen policy may list ``approvals.approvers``;
  anyone else is refused (:class:`~patchpilot.core.errors.NotAuthorizedError`) before anything
  changes.
- **Inputs are bounded before acting**: the comment (at most
  :data:`~patchpilot.core.text.MAX_COMMENT_LENGTH` characters, no control characters) and the words
  are validated before the decision is recorded, so a bad comment never leaves a run half-decided.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core.audit import AuditLog, current_actor
from patchpilot.core.errors import InvalidInputError, NotAuthorizedError, UnknownTargetError
from patchpilot.core.models import utcnow
from patchpilot.core.policy import Policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import ApprovalRecord, Store, StoreError
from patchpilot.core.text import MAX_COMMENT_LENGTH, bounded
from patchpilot.graphs.run import (
    ApprovalDecision,
    RunBusyError,
    RunContext,
    RunResult,
    continue_run,
    load_run_state,
)

__all__ = [
    "MAX_DECISION_WORDS",
    "DecisionSource",
    "check_allowed",
    "continue_waiting_run",
    "decide",
    "decision_of",
    "expire",
    "list_approvals",
    "record_decision",
]

log = structlog.get_logger(__name__)

MAX_DECISION_WORDS: Final = 4000
"""Longest record of the words that made a decision (a chat line is at most 2,000)."""


class DecisionSource(BaseModel):
    """How a decision reached patchpilot: which parser read it, from which of the person's words.

    ``parser`` has no ``llm`` value on purpose: a model may suggest, never decide.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    parser: Literal["cli", "grammar"] = Field(
        description="cli: the approve/reject command; grammar: chat words read by the "
        "deterministic grammar"
    )
    words: str = Field(min_length=1, description="the person's own words, verbatim")


def expire(store: Store, settings: Settings, record: ApprovalRecord, now: datetime) -> None:
    """Record an overdue approval as ``expired`` (audit-logged)."""
    store.decide_approval(
        record.run_id, "expired", by="patchpilot", at=now, via="patchpilot", words="expired"
    )
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


def record_decision(
    settings: Settings,
    store: Store,
    run_id: str,
    status: Literal["approved", "rejected"],
    *,
    comment: str | None,
    source: DecisionSource,
    actor: str,
) -> ApprovalRecord:
    """Record ``actor``'s decision on a run's pending approval (audit-logged); do not continue.

    Every input is validated before anything is recorded (see the module's guarantees). An
    approval past its expiry is recorded ``expired`` instead. A run decided already whose
    deciding process died before continuing it is returned as decided (continue it with
    :func:`continue_waiting_run`).

    Args:
        settings: The settings (store, audit log, checkpoints).
        store: The store.
        run_id: The run to decide.
        status: ``approved`` or ``rejected``.
        comment: Why (bounded, no control characters).
        source: Which parser read the decision, and the words.
        actor: Who decides (the CLI passes the OS user; the service an authenticated user).

    Returns:
        The decided approval record (``approved``, ``rejected`` or ``expired``).

    Raises:
        InvalidInputError: the comment or the words are too long or carry control characters.
        NotAuthorizedError: the run's policy lists approvers and ``actor`` is not one of them.
        UnknownTargetError: no such run, or it never asked for approval.
        StoreError: it was decided already (and the run went on).
    """
    if comment is not None:
        comment = bounded(comment, what="comment", max_length=MAX_COMMENT_LENGTH)
    words = bounded(source.words, what="decision words", max_length=MAX_DECISION_WORDS)
    if status not in ("approved", "rejected"):
        raise InvalidInputError("decision", f"{status!r} is not approved or rejected")
    who = actor
    record = store.approval(run_id)
    if record is None:
        if store.get_run(run_id) is None:
            raise UnknownTargetError(f"no run {run_id!r}; see `patchpilot runs`", key="run_id")
        raise UnknownTargetError(f"run {run_id} never asked for approval", key="run_id")
    now = utcnow()
    if record.status == "pending" and record.expired_at(now):
        expire(store, settings, record, now)
    elif record.status == "pending":
        snapshot = load_run_state(run_id, settings)
        if snapshot is None:
            raise UnknownTargetError(f"no checkpoint for run {run_id}; see `patchpilot runs`")
        try:
            check_allowed(snapshot.state.policy, who, run_id)
        except NotAuthorizedError:
            AuditLog.for_settings(settings, run_id=run_id, actor=who).record(
                "approval.refused", details={"reason": "not an approver", "words": words}
            )
            raise
        record = store.decide_approval(
            run_id, status, by=who, comment=comment, at=now, via=source.parser, words=words
        )
        AuditLog.for_settings(settings, run_id=run_id, actor=who).record(
            f"approval.{'granted' if status == 'approved' else 'rejected'}",
            details={
                "plan_id": record.plan_id,
                "content_hash": record.content_hash,
                "comment": comment,
                "via": source.parser,
                "words": words,
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
    return decided


def decide(
    settings: Settings,
    store: Store,
    run_id: str,
    status: Literal["approved", "rejected"],
    *,
    comment: str | None,
    make_context: Callable[[Policy], RunContext],
    source: DecisionSource,
    actor: str | None = None,
) -> RunResult:
    """Approve or reject a run's pending approval, then continue the run in this process.

    :func:`record_decision` then :func:`continue_waiting_run`; every input is validated before
    anything is recorded (see the module's guarantees).

    Args:
        settings: The settings (store, audit log, checkpoints).
        store: The store.
        run_id: The run to decide.
        status: ``approved`` or ``rejected``.
        comment: Why (bounded, no control characters).
        make_context: Builds the run context from the run's frozen policy.
        source: Which parser read the decision, and the words.
        actor: Who decides (default: the OS user).

    Raises:
        InvalidInputError: the comment or the words are too long or carry control characters.
        NotAuthorizedError: the run's policy lists approvers and ``actor`` is not one of them.
        UnknownTargetError: no such run, or it never asked for approval.
        StoreError: it was decided already (and the run went on).
    """
    decided = record_decision(
        settings,
        store,
        run_id,
        status,
        comment=comment,
        source=source,
        actor=actor or current_actor(),
    )
    return continue_waiting_run(settings, store, run_id, decision_of(decided), make_context)


def list_approvals(
    settings: Settings,
    store: Store,
    *,
    actor: str,
    include_decided: bool = False,
    make_context: Callable[[Policy], RunContext],
) -> list[ApprovalRecord]:
    """Approvals waiting (and, with ``include_decided``, decided and expired ones).

    Overdue ones are recorded ``expired`` first and their runs continue (to end ``rejected``);
    a run another process is driving is left to it.
    """
    now = utcnow()
    for record in store.approvals("pending"):
        if record.expired_at(now):
            expire(store, settings, record, now)
            expired = store.approval(record.run_id)
            assert expired is not None
            log.info("approval.expiry_swept", actor=actor, run_id=record.run_id)
            with contextlib.suppress(RunBusyError):
                continue_waiting_run(
                    settings, store, record.run_id, decision_of(expired), make_context
                )
    return store.approvals(None if include_decided else "pending")


def check_allowed(policy: Policy, who: str, run_id: str) -> None:
    """Refuse ``who`` unless ``policy`` (a run's frozen policy) allows them to decide.

    Raises:
        NotAuthorizedError: ``approvals.approvers`` is set and does not name ``who``.
    """
    approvers = policy.approvals.approvers
    if approvers and who not in approvers:
        raise NotAuthorizedError(
            f"{who!r} may not decide run {run_id}: its policy allows only "
            f"{', '.join(approvers)} (approvals.approvers)"
        )

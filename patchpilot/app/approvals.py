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
  changes. A user of the store (the service's identities) must be enabled and hold a role
  that may decide (:data:`~patchpilot.core.auth.Action.DECIDE`).
- **Never the requester**: the person who started the run (:func:`requester_of`) may not
  decide it (:class:`~patchpilot.core.errors.SelfApprovalError`) once the store has users (the
  service) or when the policy sets ``approvals.refuse_self_approval``; a local install without
  users keeps working as before (the OS user may approve their own run).
- **N distinct approvers**: with ``approvals.required: N`` each approval is a vote
  (``approval.voted`` in the audit log, with the voter); the run continues only once N distinct
  people approved (and one member of each approver group whose tags the run's hosts carry);
  one rejection rejects. Every vote names its voter in the store and the audit log.
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

from patchpilot.core.audit import AuditError, AuditLog, current_actor, read_events
from patchpilot.core.auth import Action, allowed
from patchpilot.core.errors import (
    InvalidInputError,
    NotAuthorizedError,
    SelfApprovalError,
    UnknownTargetError,
)
from patchpilot.core.models import utcnow
from patchpilot.core.policy import ApproverGroup, Policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import ApprovalRecord, Store, StoreError
from patchpilot.core.text import MAX_COMMENT_LENGTH, bounded
from patchpilot.graphs.run import (
    ApprovalDecision,
    RunBusyError,
    RunContext,
    RunResult,
    RunSnapshot,
    continue_run,
    load_run_state,
    result_of,
)

__all__ = [
    "MAX_DECISION_WORDS",
    "DecisionSource",
    "check_allowed",
    "check_not_requester",
    "check_role",
    "continue_waiting_run",
    "decide",
    "decision_of",
    "expire",
    "list_approvals",
    "record_decision",
    "requester_of",
    "required_groups",
]

log = structlog.get_logger(__name__)

MAX_DECISION_WORDS: Final = 4000
"""Longest record of the words that made a decision (a chat line is at most 2,000)."""


class DecisionSource(BaseModel):
    """How a decision reached patchpilot: which parser read it, from which of the person's words.

    ``parser`` has no ``llm`` value on purpose: a model may suggest, never decide.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    parser: Literal["cli", "api", "grammar"] = Field(
        description="cli: the approve/reject command; api: the REST API's approve/reject "
        "endpoints (an authenticated user); grammar: chat words read by the "
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
        NotAuthorizedError: the run's policy lists approvers and ``actor`` is not one of them,
            or ``actor`` is a disabled user or one whose role may not decide.
        SelfApprovalError: ``actor`` requested the run (see :func:`check_not_requester`).
        UnknownTargetError: no such run, or it never asked for approval.
        StoreError: it was decided already (and the run went on), or ``actor`` voted on it
            already.

    Returns the record still ``pending`` when this was one vote of several needed
    (``approvals.required``, approver groups).
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
        policy = snapshot.state.policy
        try:
            check_not_requester(settings, store, policy, who, run_id, status)
            check_allowed(policy, who, run_id)
            check_role(store, who, run_id)
        except NotAuthorizedError as exc:
            reason = "self-approval" if isinstance(exc, SelfApprovalError) else "not an approver"
            AuditLog.for_settings(settings, run_id=run_id, actor=who).record(
                "approval.refused",
                details={"reason": reason, "decision": status, "words": words},
            )
            raise
        groups = required_groups(policy, snapshot)
        outcome = store.vote_approval(
            run_id,
            who,
            status,
            required=policy.approvals.required,
            groups=[(g.name, frozenset(g.approvers)) for g in groups],
            comment=comment,
            at=now,
            via=source.parser,
            words=words,
        )
        record = outcome.approval
        approvers = [v.voter for v in outcome.votes if v.decision == "approved"]
        details: dict[str, object] = {
            "plan_id": record.plan_id,
            "content_hash": record.content_hash,
            "comment": comment,
            "via": source.parser,
            "words": words,
        }
        audit = AuditLog.for_settings(settings, run_id=run_id, actor=who)
        if not outcome.decided:
            audit.record(
                "approval.voted",
                details={
                    **details,
                    "decision": status,
                    "approvers": approvers,
                    "required": policy.approvals.required,
                    "missing": list(outcome.missing),
                },
            )
        else:
            if status == "approved" and (policy.approvals.required > 1 or groups):
                details["approvers"] = approvers
            audit.record(
                f"approval.{'granted' if status == 'approved' else 'rejected'}", details=details
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
    if decided.status == "pending":  # a vote; more approvers are needed before it continues
        snapshot = load_run_state(run_id, settings)
        if snapshot is None:
            raise UnknownTargetError(f"no checkpoint for run {run_id}; see `patchpilot runs`")
        waiting = result_of(run_id, snapshot)
        votes = [v.voter for v in store.approval_votes(run_id) if v.plan_id == decided.plan_id]
        note = f"approved so far by {', '.join(votes)}; waiting for more approvers"
        return waiting.model_copy(
            update={"reason": f"{waiting.reason}; {note}" if waiting.reason else note}
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


def requester_of(settings: Settings, store: Store, run_id: str) -> str | None:
    """Who started ``run_id``: the run's ``requested_by`` parameter when the store has one,
    else the actor of its ``run.started`` audit event; None if neither is known."""
    run = store.get_run(run_id)
    if run is not None:
        named = run.params.get("requested_by")
        if isinstance(named, str) and named:
            return named
    try:
        events = read_events(settings, run_id=run_id)
    except AuditError as exc:
        log.warning("approval.requester_unreadable", run_id=run_id, error=str(exc))
        return None
    return next((e.actor for e in events if e.action == "run.started"), None)


def check_role(store: Store, who: str, run_id: str) -> None:
    """Refuse a user of the store who is disabled or whose role may not decide.

    An identity that is no user (the OS user of the local CLI) is left to the other checks.

    Raises:
        NotAuthorizedError: a disabled user, or a role without ``decide``.
    """
    user = store.user(who)
    if user is None:
        return
    if user.disabled:
        raise NotAuthorizedError(f"user {who!r} is disabled and may not decide run {run_id}")
    if not allowed(user.role, Action.DECIDE):
        raise NotAuthorizedError(
            f"{who!r} ({user.role.value}) may not decide run {run_id}: only approvers and "
            "admins decide approvals"
        )


def check_not_requester(
    settings: Settings,
    store: Store,
    policy: Policy,
    who: str,
    run_id: str,
    status: Literal["approved", "rejected"],
) -> None:
    """Refuse a decision by the run's requester (separation of duties).

    Enforced once the store has users (the service) or when the run's policy sets
    ``approvals.refuse_self_approval``. When enforced and the requester cannot be told (no
    ``run.started`` event), an approval is refused too (a rejection is not: it deploys nothing).

    Raises:
        SelfApprovalError: ``who`` requested the run (or, for an approval, nobody can tell).
    """
    if not (policy.approvals.refuse_self_approval or store.has_users()):
        return
    requester = requester_of(settings, store, run_id)
    if requester is None:
        if status == "approved":
            raise SelfApprovalError(
                f"cannot tell who requested run {run_id} (no run.started event in the audit "
                "log), so it cannot be approved: nobody may approve their own run; reject it "
                "and start it again"
            )
        return
    if requester.casefold() == who.casefold():
        raise SelfApprovalError(
            f"{who!r} requested run {run_id} and may not decide it: another approver must "
            f"{'approve' if status == 'approved' else 'reject'} it"
        )


def required_groups(policy: Policy, snapshot: RunSnapshot) -> list[ApproverGroup]:
    """The approver groups of ``policy`` whose tags a host of the run carries."""
    tags = set().union(*(host.tags for host in snapshot.state.hosts))
    return [g for g in policy.approvals.groups if tags & set(g.tags)]

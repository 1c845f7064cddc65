"""Approvals decided by several people (schema v6): each person's vote, and the decision.

:class:`VotesRepository` extends :class:`~patchpilot.core.store.rollout.RolloutRepository`
(and is part of :class:`patchpilot.core.store.Store`): a pending approval may need ``required``
distinct approvers, and one member of each approver group, before it is ``approved``; one
rejection rejects. :meth:`VotesRepository.vote_approval` records a person's vote and, when the
votes suffice, decides the approval, all in one ``BEGIN IMMEDIATE`` transaction: two people
voting at once are serialised, a person votes at most once per plan, and the approval moves
from ``pending`` exactly once (the same ``UPDATE ... WHERE status = 'pending'`` as
:meth:`~patchpilot.core.store.rollout.RolloutRepository.decide_approval`).

    outcome = store.vote_approval("run-1", "alice", "approved", required=2)
    outcome.approval.status        # 'pending': one more approver needed
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict

from patchpilot.core.store.base import db_now
from patchpilot.core.store.records import ApprovalRecord, StoreError
from patchpilot.core.store.rollout import RolloutRepository
from patchpilot.core.store.schema import from_db_time

__all__ = ["VoteOutcome", "VoteRecord", "VotesRepository"]

log = structlog.get_logger(__name__)

Vote = Literal["approved", "rejected"]

_VOTE_SELECT: Final = (
    "SELECT run_id, plan_id, voter, decision, comment, via, words, voted_at FROM approval_votes"
)


class VoteRecord(BaseModel):
    """One person's vote on one approval request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    plan_id: str
    voter: str
    decision: Vote
    comment: str | None = None
    via: str | None = None
    words: str | None = None
    voted_at: AwareDatetime


class VoteOutcome(BaseModel):
    """A vote and where the approval stands after it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approval: ApprovalRecord
    votes: tuple[VoteRecord, ...]
    decided: bool
    missing: tuple[str, ...] = ()
    """What the approval still needs (``1 more approver``, ``an approver of group db``)."""


def _vote(row: tuple[object, ...]) -> VoteRecord:
    run_id, plan_id, voter, decision, comment, via, words, voted = row
    return VoteRecord(
        run_id=str(run_id),
        plan_id=str(plan_id),
        voter=str(voter),
        decision="approved" if decision == "approved" else "rejected",
        comment=None if comment is None else str(comment),
        via=None if via is None else str(via),
        words=None if words is None else str(words),
        voted_at=from_db_time(str(voted)),
    )


def missing_approvals(
    approvers: Sequence[str], required: int, groups: Sequence[tuple[str, frozenset[str]]]
) -> tuple[str, ...]:
    """What ``approvers`` (distinct people who approved) still lack; empty: enough.

    Args:
        approvers: Who approved so far.
        required: Distinct approvers needed.
        groups: (group name, its members) of each approver group the run needs.
    """
    people = set(approvers)
    missing: list[str] = []
    if len(people) < required:
        more = required - len(people)
        missing.append(f"{more} more approver{'s' if more > 1 else ''}")
    missing.extend(
        f"an approver of group {name}" for name, members in groups if not people & members
    )
    return tuple(missing)


class VotesRepository(RolloutRepository):
    """Votes on approvals by several people; part of ``Store``."""

    def vote_approval(
        self,
        run_id: str,
        voter: str,
        decision: Vote,
        *,
        required: int = 1,
        groups: Sequence[tuple[str, frozenset[str]]] = (),
        comment: str | None = None,
        at: datetime | None = None,
        via: str | None = None,
        words: str | None = None,
    ) -> VoteOutcome:
        """Record ``voter``'s vote on the run's pending approval; decide it when it suffices.

        A rejection decides at once (``rejected``, by the voter). An approval decides
        ``approved`` once the distinct approvers number ``required`` and each of ``groups``
        has one of its members among them; ``decided_by`` then names every approver
        (``alice, bob``) and ``comment`` is the last approver's.

        Raises:
            StoreError: no pending approval (unknown run, never asked, decided already, or an
                approval past its expiry), or ``voter`` voted on this plan already; nothing
                changes then.
        """
        what = f"vote on the approval of run {run_id}"
        if decision not in ("approved", "rejected"):
            raise StoreError(f"{what}: a vote is approved or rejected, not {decision!r}")
        if not voter or not voter.strip():
            raise StoreError(f"{what}: the voter is empty")
        if required < 1:
            raise StoreError(f"{what}: required must be at least 1, not {required}")
        when = db_now(at)
        with self._transaction(what) as conn:
            row = conn.execute(
                "SELECT plan_id, expires_at FROM approvals WHERE run_id = ? AND status = 'pending'",
                (run_id,),
            ).fetchone()
            if row is None or (decision == "approved" and when >= row[1]):
                raise StoreError(self._no_pending_approval(conn, run_id))
            plan_id = str(row[0])
            earlier = conn.execute(
                _VOTE_SELECT + " WHERE run_id = ? AND plan_id = ? AND voter = ?",
                (run_id, plan_id, voter),
            ).fetchone()
            if earlier is not None:
                previous = _vote(earlier)
                raise StoreError(
                    f"{voter} already {previous.decision} plan {plan_id} of run {run_id} at "
                    f"{previous.voted_at.isoformat(timespec='seconds')}; another approver "
                    "must decide"
                )
            conn.execute(
                "INSERT INTO approval_votes (run_id, plan_id, voter, decision, comment, via,"
                " words, voted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, plan_id, voter, decision, comment, via, words, when),
            )
            votes = tuple(
                _vote(r)
                for r in conn.execute(
                    _VOTE_SELECT + " WHERE run_id = ? AND plan_id = ? ORDER BY voted_at, voter",
                    (run_id, plan_id),
                )
            )
            approvers = [v.voter for v in votes if v.decision == "approved"]
            missing = (
                () if decision == "rejected" else missing_approvals(approvers, required, groups)
            )
            decided = not missing
            if decided:
                by = voter if decision == "rejected" else ", ".join(dict.fromkeys(approvers))
                updated = conn.execute(
                    "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?,"
                    " comment = ?, decided_via = ?, decided_words = ?"
                    " WHERE run_id = ? AND plan_id = ? AND status = 'pending'",
                    (decision, when, by, comment, via, words, run_id, plan_id),
                )
                if updated.rowcount != 1:  # pragma: no cover - the write lock is held
                    raise StoreError(self._no_pending_approval(conn, run_id))
        approval = self.approval(run_id)
        assert approval is not None
        log.info(
            "store.approval_voted",
            run_id=run_id,
            plan_id=plan_id,
            voter=voter,
            decision=decision,
            decided=decided,
            missing=list(missing),
        )
        return VoteOutcome(approval=approval, votes=votes, decided=decided, missing=missing)

    def approval_votes(self, run_id: str) -> list[VoteRecord]:
        """Every vote on the run's approvals, oldest first."""
        rows = self._conn().execute(
            _VOTE_SELECT + " WHERE run_id = ? ORDER BY voted_at, voter", (run_id,)
        )
        return [_vote(row) for row in rows]

"""Rollout state in the store (schema v3): per-host progress, approvals, baseline rejections.

:class:`RolloutRepository` is part of :class:`patchpilot.core.store.Store`; it holds the methods a
patch rollout needs to survive a crash and to wait for a person:

* ``run_deployments``: what a deploy run did on each host, so a resumed run skips the hosts
  already ``done`` (a ``done`` host is never reopened);
* ``approvals``: a run waiting for a person, decided from another process; the move from
  ``pending`` is one ``UPDATE ... WHERE status = 'pending'`` in a write transaction, so two
  deciders cannot both win;
* ``baseline_rejections``: a version that failed its health check after a patch, rejected
  until a person clears it.

    store.deployment_started(run_id, "web-1", "canary", items)
    store.deployment_finished(run_id, "web-1", "canary", {"ok": True})
    done = {d.host for d in store.deployments(run_id) if d.state == "done"}

Every write is one ``BEGIN IMMEDIATE`` transaction; every refusal is a :class:`StoreError` that
says what to do instead. JSON columns are written with ``pydantic_core.to_json`` (datetimes
become ISO text) and read back as plain JSON values.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, get_args

import structlog
from pydantic_core import PydanticSerializationError

from patchpilot.core.store.base import StoreBase, db_now, json_text, require_run
from patchpilot.core.store.records import (
    ApprovalDecision,
    ApprovalRecord,
    ApprovalStatus,
    DeploymentRecord,
    RejectionRecord,
    StoreError,
)
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = ["RolloutMixin", "RolloutRepository"]

log = structlog.get_logger(__name__)

_APPROVAL_STATUSES: Final[tuple[str, ...]] = get_args(ApprovalStatus)
_DECISIONS: Final[tuple[str, ...]] = get_args(ApprovalDecision)

# Column order of the records' row readers below (the RETURNING clauses repeat it).
_DEPLOYMENT_SELECT: Final = (
    "SELECT run_id, host, ring, state, items, started_at, finished_at, result FROM run_deployments"
)
_APPROVAL_SELECT: Final = (
    "SELECT run_id, plan_id, content_hash, status, reasons, payload, requested_at, expires_at,"
    " decided_at, decided_by, comment, decided_via, decided_words FROM approvals"
)
_REJECTION_SELECT: Final = (
    "SELECT package, version, reason, run_id, rejected_at, cleared_at, cleared_by"
    " FROM baseline_rejections"
)


# --------------------------------------------------------------------------- helpers


def _require_text(what: str, **fields: str) -> None:
    """Refuse empty (or blank) text arguments, naming the first one."""
    for label, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise StoreError(f"{what}: {label} is empty")


def _json(what: str, label: str, value: Any) -> str:
    """JSON text of ``value`` (datetimes, enums and models included)."""
    try:
        return json_text(value)
    except PydanticSerializationError as exc:
        raise StoreError(f"{what}: {label} cannot be stored as JSON: {exc}") from exc


def _shown(text: str) -> str:
    """A stored time as people read it in messages (UTC, to the second)."""
    return from_db_time(text).isoformat(timespec="seconds")


def _deployment(row: tuple[Any, ...]) -> DeploymentRecord:
    run_id, host, ring, state, items, started, finished, result = row
    return DeploymentRecord(
        run_id=run_id,
        host=host,
        ring=ring,
        state=state,
        items=json.loads(items),
        started_at=from_db_time(started),
        finished_at=from_db_time(finished) if finished is not None else None,
        result=json.loads(result) if result is not None else None,
    )


def _approval(row: tuple[Any, ...]) -> ApprovalRecord:
    (
        run_id,
        plan_id,
        content_hash,
        status,
        reasons,
        payload,
        requested,
        expires,
        decided,
        decided_by,
        comment,
        decided_via,
        decided_words,
    ) = row
    return ApprovalRecord(
        run_id=run_id,
        plan_id=plan_id,
        content_hash=content_hash,
        status=status,
        reasons=tuple(json.loads(reasons)),
        payload=json.loads(payload),
        requested_at=from_db_time(requested),
        expires_at=from_db_time(expires),
        decided_at=from_db_time(decided) if decided is not None else None,
        decided_by=decided_by,
        comment=comment,
        decided_via=decided_via,
        decided_words=decided_words,
    )


def _rejection(row: tuple[Any, ...]) -> RejectionRecord:
    package, version, reason, run_id, rejected, cleared, cleared_by = row
    return RejectionRecord(
        package=package,
        version=version,
        reason=reason,
        run_id=run_id,
        rejected_at=from_db_time(rejected),
        cleared_at=from_db_time(cleared) if cleared is not None else None,
        cleared_by=cleared_by,
    )


def _decision_text(record: ApprovalRecord) -> str:
    """How a decided approval ended, for messages: ``it was approved by alice at ...``."""
    at = record.decided_at.isoformat(timespec="seconds") if record.decided_at else "?"
    if record.status == "expired":
        text = (
            f"it expired at {record.expires_at.isoformat(timespec='seconds')}"
            f" (recorded by {record.decided_by} at {at})"
        )
    else:
        text = f"it was {record.status} by {record.decided_by} at {at}"
    if record.comment:
        text += f": {record.comment!r}"
    return text


# --------------------------------------------------------------------------- the repository


class RolloutRepository(StoreBase):
    """Deployment progress, approvals and baseline rejections; part of ``Store``."""

    # ------------------------------------------------------------------ per-host deployments

    def deployment_started(
        self,
        run_id: str,
        host: str,
        ring: str,
        items: list[dict[str, Any]],
        *,
        at: datetime | None = None,
    ) -> None:
        """Record that a deploy run starts on ``host`` (state ``running``).

        Starting a host again while it is ``running`` (a resumed run retrying an interrupted
        host) replaces its ring, items and start time. A host that is ``done`` is never
        reopened: the call then changes nothing.

        Args:
            run_id: The deploy run (must exist).
            host: The host.
            ring: The rollout ring the host is deployed in (``canary``...).
            items: The plan items the host is given (JSON-serialisable mappings).
            at: When (default now).

        Raises:
            StoreError: If the run is unknown, a text field is empty or the items are not a
                list of JSON-serialisable mappings.
        """
        what = f"start deployment of {host} in run {run_id}"
        _require_text(what, run_id=run_id, host=host, ring=ring)
        if isinstance(items, str | bytes) or not all(isinstance(i, Mapping) for i in items):
            raise StoreError(f"{what}: items must be a list of mappings (plan items as dicts)")
        items_json = _json(what, "items", list(items))
        when = db_now(at)
        with self._transaction(what) as conn:
            require_run(conn, run_id, what)
            cursor = conn.execute(
                "INSERT INTO run_deployments (run_id, host, ring, state, items, started_at)"
                " VALUES (?, ?, ?, 'running', ?, ?) ON CONFLICT (run_id, host) DO UPDATE SET"
                " ring = excluded.ring, items = excluded.items, started_at = excluded.started_at"
                " WHERE run_deployments.state = 'running'",
                (run_id, host, ring, items_json, when),
            )
            already_done = cursor.rowcount == 0
        if already_done:
            log.info("store.deployment_already_done", run_id=run_id, host=host)

    def deployment_finished(
        self,
        run_id: str,
        host: str,
        ring: str,
        result: dict[str, Any],
        *,
        at: datetime | None = None,
    ) -> None:
        """Record that a deploy run finished on ``host`` (state ``done``, with its result).

        Without a ``running`` row one is created (its items empty, started and finished at
        ``at``); a ``done`` row gets the new ring, result and finish time.

        Args:
            run_id: The deploy run (must exist).
            host: The host.
            ring: The rollout ring the host was deployed in.
            result: How it ended (a JSON-serialisable mapping).
            at: When (default now).

        Raises:
            StoreError: If the run is unknown, a text field is empty or the result is not a
                JSON-serialisable mapping.
        """
        what = f"finish deployment of {host} in run {run_id}"
        _require_text(what, run_id=run_id, host=host, ring=ring)
        if not isinstance(result, Mapping):
            raise StoreError(f"{what}: result must be a mapping, not {type(result).__name__}")
        result_json = _json(what, "result", dict(result))
        when = db_now(at)
        with self._transaction(what) as conn:
            require_run(conn, run_id, what)
            conn.execute(
                "INSERT INTO run_deployments (run_id, host, ring, state, items, started_at,"
                " finished_at, result) VALUES (?, ?, ?, 'done', '[]', ?, ?, ?)"
                " ON CONFLICT (run_id, host) DO UPDATE SET ring = excluded.ring,"
                " state = 'done', finished_at = excluded.finished_at, result = excluded.result",
                (run_id, host, ring, when, when, result_json),
            )

    def deployments(self, run_id: str) -> list[DeploymentRecord]:
        """Every host a deploy run started or finished, by start time then host.

        Args:
            run_id: The run (an unknown run has none).

        Returns:
            The records; those in state ``done`` are the hosts a resumed run skips.
        """
        rows = self._conn().execute(
            _DEPLOYMENT_SELECT + " WHERE run_id = ? ORDER BY started_at, host",
            (run_id,),
        )
        return [_deployment(row) for row in rows]

    # ------------------------------------------------------------------ approvals

    def request_approval(
        self,
        run_id: str,
        plan_id: str,
        content_hash: str,
        reasons: list[str],
        payload: dict[str, Any],
        *,
        requested_at: datetime,
        expires_at: datetime,
    ) -> ApprovalRecord:
        """Ask a person to approve plan ``plan_id`` of a run (status ``pending``).

        Idempotent: when (run, plan) was asked before, that request is returned unchanged,
        whatever its status (a resumed run does not ask twice, nor reopen a decision).

        Args:
            run_id: The run waiting (must exist).
            plan_id: The plan to approve.
            content_hash: Hash of the plan content the person is shown.
            reasons: Why the plan needs a person.
            payload: What the person needs to decide (JSON-serialisable).
            requested_at: When it was asked.
            expires_at: When it expires unless decided (after ``requested_at``).

        Returns:
            The (new or earlier) request.

        Raises:
            StoreError: If the run is unknown, a field is empty or malformed, the deadline is
                not after the request, or the run already waits for approval of another plan
                (decide that one first: at most one approval per run is pending).
        """
        what = f"request approval of plan {plan_id} in run {run_id}"
        _require_text(what, run_id=run_id, plan_id=plan_id, content_hash=content_hash)
        if isinstance(reasons, str | bytes) or not all(isinstance(r, str) for r in reasons):
            raise StoreError(f"{what}: reasons must be a list of strings")
        if not isinstance(payload, Mapping):
            raise StoreError(f"{what}: payload must be a mapping, not {type(payload).__name__}")
        reasons_json = _json(what, "reasons", list(reasons))
        payload_json = _json(what, "payload", dict(payload))
        requested, expires = to_db_time(requested_at), to_db_time(expires_at)
        if expires <= requested:
            raise StoreError(
                f"{what}: expires_at ({_shown(expires)}) must be after requested_at"
                f" ({_shown(requested)})"
            )
        with self._transaction(what) as conn:
            require_run(conn, run_id, what)
            row = conn.execute(
                _APPROVAL_SELECT + " WHERE run_id = ? AND plan_id = ?",
                (run_id, plan_id),
            ).fetchone()
            if row is not None:
                existing = _approval(row)
                if existing.content_hash != content_hash:
                    log.warning(
                        "store.approval_content_changed",
                        run_id=run_id,
                        plan_id=plan_id,
                        stored=existing.content_hash,
                        requested=content_hash,
                    )
                return existing
            pending = conn.execute(
                "SELECT plan_id, requested_at FROM approvals"
                " WHERE run_id = ? AND status = 'pending'",
                (run_id,),
            ).fetchone()
            if pending is not None:
                raise StoreError(
                    f"run {run_id} already waits for approval of plan {pending[0]} (asked at"
                    f" {_shown(pending[1])}); decide it (rejected or expired) before asking"
                    f" about plan {plan_id}"
                )
            (row,) = conn.execute(
                "INSERT INTO approvals (run_id, plan_id, content_hash, status, reasons, payload,"
                " requested_at, expires_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)"
                " RETURNING run_id, plan_id, content_hash, status, reasons, payload,"
                " requested_at, expires_at, decided_at, decided_by, comment, decided_via,"
                " decided_words",
                (run_id, plan_id, content_hash, reasons_json, payload_json, requested, expires),
            ).fetchall()
        record = _approval(row)
        log.info(
            "store.approval_requested",
            run_id=run_id,
            plan_id=plan_id,
            expires_at=record.expires_at.isoformat(),
        )
        return record

    def decide_approval(
        self,
        run_id: str,
        status: ApprovalDecision,
        *,
        by: str,
        comment: str | None = None,
        at: datetime | None = None,
        via: str | None = None,
        words: str | None = None,
    ) -> ApprovalRecord:
        """Decide the run's pending approval, atomically: of two deciders only one wins.

        The move from ``pending`` is one ``UPDATE ... WHERE status = 'pending'`` inside a
        write transaction; whoever comes second finds no pending approval and gets a
        :class:`StoreError` naming the decision that won. A request past its deadline (at
        ``at``) can no longer be ``approved``: record it ``expired`` (or ``rejected``).

        Args:
            run_id: The run.
            status: ``approved``, ``rejected`` or ``expired``.
            by: Who decided (a person, or ``patchpilot`` for an expiry).
            comment: Why, if given.
            at: When (default now); also the time the deadline is checked against.
            via: Which parser read the decision from the person (``cli``, ``grammar``, or
                ``patchpilot`` for an expiry).
            words: The person's own words that said so (the chat line or the command).

        Returns:
            The decided approval.

        Raises:
            StoreError: If the status is unknown, ``by`` is empty, or the run has no pending
                approval (never asked, already decided, unknown run) or it expired before
                an approval; nothing changes then.
        """
        what = f"decide approval of run {run_id}"
        if status not in _DECISIONS:
            raise StoreError(f"{what}: unknown decision {status!r} (approved, rejected or expired)")
        _require_text(what, run_id=run_id, by=by)
        when = db_now(at)
        with self._transaction(what) as conn:
            rows = conn.execute(
                "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, comment = ?,"
                " decided_via = ?, decided_words = ?"
                " WHERE run_id = ? AND status = 'pending'"
                " AND (? <> 'approved' OR ? < expires_at)"
                " RETURNING run_id, plan_id, content_hash, status, reasons, payload,"
                " requested_at, expires_at, decided_at, decided_by, comment, decided_via,"
                " decided_words",
                (status, when, by, comment, via, words, run_id, status, when),
            ).fetchall()
            if len(rows) != 1:
                # Zero rows (the unique index allows at most one pending approval per run).
                raise StoreError(self._no_pending_approval(conn, run_id))
        record = _approval(rows[0])
        log.info(
            "store.approval_decided",
            run_id=run_id,
            plan_id=record.plan_id,
            status=status,
            by=by,
        )
        return record

    @staticmethod
    def _no_pending_approval(conn: sqlite3.Connection, run_id: str) -> str:
        """Why :meth:`decide_approval` found nothing to decide (an actionable message)."""
        row = conn.execute(
            _APPROVAL_SELECT + " WHERE run_id = ?"
            " ORDER BY status = 'pending' DESC, requested_at DESC, rowid DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        if row is None:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                return f"unknown run {run_id!r}: there is no approval to decide"
            return f"run {run_id} never asked for approval: there is nothing to decide"
        latest = _approval(row)
        if latest.status == "pending":
            return (
                f"the approval of plan {latest.plan_id} in run {run_id} expired at"
                f" {latest.expires_at.isoformat(timespec='seconds')} and can no longer be"
                " approved; record it as expired (or rejected) and plan again"
            )
        return (
            f"run {run_id} has no pending approval (plan {latest.plan_id}:"
            f" {_decision_text(latest)})"
        )

    def approval(self, run_id: str) -> ApprovalRecord | None:
        """The run's latest approval request (by request time), or None if it never asked."""
        row = (
            self._conn()
            .execute(
                _APPROVAL_SELECT
                + " WHERE run_id = ? ORDER BY requested_at DESC, rowid DESC LIMIT 1",
                (run_id,),
            )
            .fetchone()
        )
        return None if row is None else _approval(row)

    def approvals(self, status: ApprovalStatus | None = "pending") -> list[ApprovalRecord]:
        """Approval requests in one status (default ``pending``; None: all), oldest first.

        Pending requests past their deadline are still ``pending`` here until someone records
        them ``expired``; :meth:`ApprovalRecord.expired_at` tells them apart.

        Raises:
            StoreError: If the status is unknown.
        """
        if status is not None and status not in _APPROVAL_STATUSES:
            raise StoreError(
                f"unknown approval status {status!r} ({', '.join(_APPROVAL_STATUSES)} or None)"
            )
        rows = self._conn().execute(
            _APPROVAL_SELECT + " WHERE ? IS NULL OR status = ? ORDER BY requested_at, rowid",
            (status, status),
        )
        return [_approval(row) for row in rows]

    # ------------------------------------------------------------------ baseline rejections

    def reject_version(
        self,
        package: str,
        version: str,
        *,
        reason: str,
        run_id: str,
        at: datetime | None = None,
    ) -> RejectionRecord:
        """Reject ``package`` ``version`` as a baseline until a person clears it.

        Idempotent while active: when the version is already rejected, that rejection is
        returned unchanged (its first reason and run are kept).

        Args:
            package: The package.
            version: The version that failed its health check.
            reason: Why (shown to the person who may clear it).
            run_id: The run whose health check failed (not checked against ``runs``: a
                rejection outlives any clean-up of old runs).
            at: When (default now).

        Returns:
            The active rejection.

        Raises:
            StoreError: If a field is empty.
        """
        what = f"reject {package}={version}"
        _require_text(what, package=package, version=version, reason=reason, run_id=run_id)
        when = db_now(at)
        with self._transaction(what) as conn:
            row = conn.execute(
                _REJECTION_SELECT + " WHERE package = ? AND version = ? AND cleared_at IS NULL",
                (package, version),
            ).fetchone()
            if row is not None:
                return _rejection(row)
            (row,) = conn.execute(
                "INSERT INTO baseline_rejections (package, version, reason, run_id, rejected_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING package, version, reason, run_id,"
                " rejected_at, cleared_at, cleared_by",
                (package, version, reason, run_id, when),
            ).fetchall()
        log.warning("store.version_rejected", package=package, version=version, run_id=run_id)
        return _rejection(row)

    def active_rejections(self) -> list[RejectionRecord]:
        """Every rejection not cleared yet, oldest first."""
        rows = self._conn().execute(
            _REJECTION_SELECT + " WHERE cleared_at IS NULL ORDER BY rejected_at, id"
        )
        return [_rejection(row) for row in rows]

    def clear_rejection(
        self, package: str, version: str, *, by: str, at: datetime | None = None
    ) -> RejectionRecord:
        """Clear the active rejection of ``package`` ``version`` (kept as history).

        Args:
            package: The package.
            version: The rejected version.
            by: Who cleared it.
            at: When (default now).

        Returns:
            The cleared rejection.

        Raises:
            StoreError: If a field is empty or the version has no active rejection (the
                message lists those that are active).
        """
        what = f"clear rejection of {package}={version}"
        _require_text(what, package=package, version=version, by=by)
        when = db_now(at)
        with self._transaction(what) as conn:
            rows = conn.execute(
                "UPDATE baseline_rejections SET cleared_at = ?, cleared_by = ?"
                " WHERE package = ? AND version = ? AND cleared_at IS NULL"
                " RETURNING package, version, reason, run_id, rejected_at, cleared_at,"
                " cleared_by",
                (when, by, package, version),
            ).fetchall()
            if len(rows) != 1:
                # Zero rows (the partial unique index allows at most one active rejection).
                raise StoreError(self._no_active_rejection(conn, package, version))
        log.info("store.rejection_cleared", package=package, version=version, by=by)
        return _rejection(rows[0])

    @staticmethod
    def _no_active_rejection(conn: sqlite3.Connection, package: str, version: str) -> str:
        """Why :meth:`clear_rejection` found nothing to clear (an actionable message)."""
        message = f"{package}={version} is not rejected"
        cleared = conn.execute(
            "SELECT cleared_by, cleared_at FROM baseline_rejections"
            " WHERE package = ? AND version = ? ORDER BY cleared_at DESC, id DESC LIMIT 1",
            (package, version),
        ).fetchone()
        if cleared is not None:
            message += f" (its rejection was cleared by {cleared[0]} at {_shown(cleared[1])})"
        active = [
            f"{name}={ver}"
            for name, ver in conn.execute(
                "SELECT package, version FROM baseline_rejections WHERE cleared_at IS NULL"
                " ORDER BY rejected_at, id"
            )
        ]
        if active:
            return f"{message}; active rejections: {', '.join(active)}"
        return f"{message}; no version is rejected"


RolloutMixin = RolloutRepository
"""The former name of :class:`RolloutRepository`."""

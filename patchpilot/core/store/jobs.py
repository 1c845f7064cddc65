"""Jobs: work queued for the service's executor (:mod:`patchpilot.app.executor`).

A job is a new patch run (``start``), a run to drive on (``continue``: after a decision, a crash
or once its window opened) or a scan (``scan``). All of the queue lives here, never in a
process, so a restarted service (or a second executor on the same database) picks up exactly
what is left:

- :meth:`JobsRepository.enqueue_run` checks the run's hosts against every active run and
  records the run (status ``queued``) and its job in ONE write transaction, so two requests for
  the same host cannot both pass the check (the second gets
  :class:`~patchpilot.core.errors.HostBusyError`).
- :meth:`JobsRepository.claim_job` moves the oldest ``queued`` job to ``claimed`` with an
  ``UPDATE ... WHERE status = 'queued'`` inside a write transaction: a job is claimed once.
- At most one queued or claimed job per run (a unique partial index): asking again to continue
  a run that already has one is a no-op.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from patchpilot.core.errors import HostBusyError
from patchpilot.core.models import utcnow
from patchpilot.core.store.base import StoreBase, json_text
from patchpilot.core.store.records import RunRecord, StoreError
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = ["ACTIVE_RUN_STATUSES", "JobKind", "JobRecord", "JobStatus", "JobsRepository"]

JobKind = Literal["start", "continue", "scan"]
JobStatus = Literal["queued", "claimed", "done", "failed", "cancelled"]

ACTIVE_RUN_STATUSES: Final = ("queued", "running", "awaiting_approval", "waiting_window")
"""Statuses of a patch run that holds its hosts (at most one such run per host)."""

_ERROR_TEXT: Final = 2000


class JobRecord(BaseModel):
    """One job of the executor's queue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    run_id: str
    kind: JobKind
    request: dict[str, Any]
    actor: str
    status: JobStatus
    owner: str | None = None
    created_at: datetime
    claimed_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


_JOB_COLUMNS: Final = (
    "SELECT id, run_id, kind, request, actor, status, owner, created_at, claimed_at,"
    " finished_at, error FROM jobs"
)


def _job(row: tuple[Any, ...]) -> JobRecord:
    ident, run_id, kind, request, actor, status, owner, created, claimed, finished, error = row
    return JobRecord(
        id=ident,
        run_id=run_id,
        kind=kind,
        request=json.loads(request),
        actor=actor,
        status=status,
        owner=owner,
        created_at=from_db_time(created),
        claimed_at=from_db_time(claimed) if claimed else None,
        finished_at=from_db_time(finished) if finished else None,
        error=error,
    )


class JobsRepository(StoreBase):
    """The executor's job queue (``jobs``); part of ``Store``."""

    def enqueue_run(
        self,
        run_id: str,
        *,
        kind: Literal["run", "scan"],
        target: str,
        hosts: list[str],
        params: dict[str, Any],
        request: dict[str, Any],
        actor: str,
    ) -> None:
        """Record a new run (status ``queued``) and its job, atomically.

        A patch run (``kind="run"``) is refused when one of ``hosts`` is in another active run
        (:data:`ACTIVE_RUN_STATUSES`); scans read only and are never refused.

        Args:
            run_id: The new run's id.
            kind: ``run`` (job ``start``) or ``scan`` (job ``scan``).
            target: The target recorded with the run (as the graph records it).
            hosts: The run's host names (checked, and recorded in ``params["hosts"]``).
            params: The run's parameters (as the graph records them).
            request: The job's parameters (JSON).
            actor: Who asked.

        Raises:
            HostBusyError: a host is in another active patch run (nothing recorded).
            StoreError: the run id exists already, or SQLite failed (nothing recorded).
        """
        now = to_db_time(utcnow())
        with self._transaction(f"queue run {run_id}") as conn:
            if kind == "run":
                rows = conn.execute(
                    "SELECT run_id, params FROM runs WHERE kind = 'run'"
                    " AND status IN (SELECT value FROM json_each(?)) ORDER BY seq",
                    (json.dumps(ACTIVE_RUN_STATUSES),),
                ).fetchall()
                wanted = set(hosts)
                for other, other_params in rows:
                    busy = sorted(wanted & set(json.loads(other_params).get("hosts") or ()))
                    if busy:
                        raise HostBusyError(
                            f"{', '.join(busy)} {'is' if len(busy) == 1 else 'are'} in run "
                            f"{other}, still active: at most one active run per host; wait for "
                            "it to end (or cancel it), then ask again",
                            hosts=busy,
                            run_id=other,
                        )
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise StoreError(f"run {run_id} exists already")
            conn.execute(
                "INSERT INTO runs (run_id, kind, target, params, status, started_at)"
                " VALUES (?, ?, ?, ?, 'queued', ?)",
                (run_id, kind, target, json_text({**params, "hosts": hosts}), now),
            )
            conn.execute(
                "INSERT INTO jobs (run_id, kind, request, actor, status, created_at)"
                " VALUES (?, ?, ?, ?, 'queued', ?)",
                (run_id, "start" if kind == "run" else "scan", json_text(request), actor, now),
            )

    def enqueue_continue(self, run_id: str, *, actor: str, reason: str) -> bool:
        """Queue a ``continue`` job for ``run_id`` unless it has a queued or claimed job already.

        Returns:
            True if a job was queued.

        Raises:
            StoreError: unknown run, or SQLite failed.
        """
        with self._transaction(f"queue continuing run {run_id}") as conn:
            if not conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise StoreError(f"unknown run {run_id!r}")
            cursor = conn.execute(
                "INSERT OR IGNORE INTO jobs (run_id, kind, request, actor, status, created_at)"
                " VALUES (?, 'continue', ?, ?, 'queued', ?)",
                (run_id, json_text({"reason": reason}), actor, to_db_time(utcnow())),
            )
            return cursor.rowcount == 1

    def claim_job(self, owner: str) -> JobRecord | None:
        """Claim the oldest queued job for ``owner`` (once: see the module), or None."""
        with self._transaction("claim a job") as conn:
            row = conn.execute(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            cursor = conn.execute(
                "UPDATE jobs SET status = 'claimed', owner = ?, claimed_at = ?"
                " WHERE id = ? AND status = 'queued'",
                (owner, to_db_time(utcnow()), row[0]),
            )
            if cursor.rowcount != 1:  # pragma: no cover - the write lock makes this impossible
                return None
            claimed = conn.execute(_JOB_COLUMNS + " WHERE id = ?", (row[0],)).fetchone()
        return _job(claimed)

    def finish_job(
        self, job_id: int, status: Literal["done", "failed"], *, error: str | None = None
    ) -> None:
        """Record the end of a claimed job.

        Raises:
            StoreError: the job is not claimed (released or cancelled meanwhile), or SQLite
                failed.
        """
        with self._transaction(f"finish job {job_id}") as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error = ?"
                " WHERE id = ? AND status = 'claimed'",
                (status, to_db_time(utcnow()), error[:_ERROR_TEXT] if error else None, job_id),
            )
            if cursor.rowcount != 1:
                raise StoreError(f"job {job_id} is not claimed")

    def release_jobs(self, owner: str) -> list[JobRecord]:
        """Put the jobs ``owner`` claimed back in the queue (``owner`` died); returns them."""
        with self._transaction(f"release the jobs of {owner}") as conn:
            rows = conn.execute(
                _JOB_COLUMNS + " WHERE status = 'claimed' AND owner = ? ORDER BY id", (owner,)
            ).fetchall()
            conn.execute(
                "UPDATE jobs SET status = 'queued', owner = NULL, claimed_at = NULL"
                " WHERE status = 'claimed' AND owner = ?",
                (owner,),
            )
        return [_job(r) for r in rows]

    def cancel_queued_job(self, run_id: str) -> JobRecord | None:
        """Cancel ``run_id``'s queued (not yet claimed) job; returns it, or None if none."""
        with self._transaction(f"cancel the job of run {run_id}") as conn:
            row = conn.execute(
                _JOB_COLUMNS + " WHERE run_id = ? AND status = 'queued'", (run_id,)
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?",
                (to_db_time(utcnow()), row[0]),
            )
        return _job(row)

    def jobs(
        self, *, status: JobStatus | None = None, run_id: str | None = None, limit: int = 1000
    ) -> list[JobRecord]:
        """Jobs, oldest first, optionally of one status and/or one run."""
        where: list[str] = []
        args: list[str] = []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        sql = _JOB_COLUMNS + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._conn().execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def active_job(self, run_id: str) -> JobRecord | None:
        """``run_id``'s queued or claimed job, if any."""
        row = (
            self._conn()
            .execute(
                _JOB_COLUMNS + " WHERE run_id = ? AND status IN ('queued', 'claimed')", (run_id,)
            )
            .fetchone()
        )
        return None if row is None else _job(row)

    def runs_with_status(self, *statuses: str, kind: str | None = None) -> list[RunRecord]:
        """Runs in one of ``statuses`` (optionally of one ``kind``), oldest first."""
        if not statuses:
            return []
        sql = (
            "SELECT run_id, kind, target, params, status, started_at, finished_at, summary"
            " FROM runs WHERE status IN (SELECT value FROM json_each(?))"
        )
        args: list[str] = [json.dumps(statuses)]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        rows = self._conn().execute(sql + " ORDER BY seq", args).fetchall()
        return [
            RunRecord(
                run_id=r[0],
                kind=r[1],
                target=r[2],
                params=json.loads(r[3]),
                status=r[4],
                started_at=from_db_time(r[5]),
                finished_at=from_db_time(r[6]) if r[6] else None,
                summary=json.loads(r[7]) if r[7] is not None else None,
            )
            for r in rows
        ]

"""Deployment outcomes: how installing a package version on a host ended, kept past runs.

The history the testing agent reads (:class:`patchpilot.agents.testing.OutcomeHistory`) and
the memory learns from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from patchpilot.core.models import (
    utcnow,
)
from patchpilot.core.store.base import StoreBase
from patchpilot.core.store.records import (
    Outcome,
    OutcomeStatus,
    StoreError,
)
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = ["OutcomesRepository"]


class OutcomesRepository(StoreBase):
    """Deployment outcomes (success, failure, rollback); part of ``Store``."""

    def record_outcome(
        self,
        run_id: str,
        host: str,
        package: str,
        from_version: str | None,
        to_version: str,
        status: OutcomeStatus | str,
        error: str | None = None,
        *,
        at: datetime | None = None,
    ) -> Outcome:
        """Record how installing ``package`` ``to_version`` on ``host`` ended in a run.

        Recording the same run, host, package and target version again replaces the status,
        error and time (a resumed run, or a failure that was then rolled back).

        Args:
            run_id: The deployment run (not checked against ``runs``: history outlives runs).
            host: The host.
            package: The binary package.
            from_version: The version installed before (``None``: a new install).
            to_version: The version installed (the plan item's target).
            status: ``success``, ``failure`` or ``rollback``.
            error: Why it failed or was rolled back.
            at: When (default now).

        Returns:
            The recorded outcome.

        Raises:
            StoreError: If the status is unknown, a field is empty, or SQLite fails.
        """
        try:
            state = OutcomeStatus(status)
        except ValueError:
            raise StoreError(
                f"unknown outcome status {status!r} (success, failure or rollback)"
            ) from None
        for label, value in (("run_id", run_id), ("host", host), ("package", package)):
            if not value:
                raise StoreError(f"record_outcome: {label} is empty")
        if not to_version:
            raise StoreError("record_outcome: to_version is empty")
        when = to_db_time(at or utcnow())
        with self._transaction(f"record outcome of {package} {to_version} on {host}") as conn:
            conn.execute(
                "INSERT INTO deployment_outcomes (run_id, host, package, from_version,"
                " to_version, status, error, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, host, package, to_version) DO UPDATE SET"
                " from_version = excluded.from_version, status = excluded.status,"
                " error = excluded.error, recorded_at = excluded.recorded_at",
                (run_id, host, package, from_version, to_version, state.value, error, when),
            )
        return Outcome(
            run_id=run_id,
            host=host,
            package=package,
            from_version=from_version,
            to_version=to_version,
            status=state,
            error=error,
            at=from_db_time(when),
        )

    def recent_outcomes(
        self, *, package: str | None = None, host: str | None = None, limit: int = 50
    ) -> list[Outcome]:
        """Recorded outcomes, newest first, optionally of one package and/or one host."""
        rows = self._conn().execute(
            "SELECT run_id, host, package, from_version, to_version, status, error, recorded_at"
            " FROM deployment_outcomes WHERE (?1 IS NULL OR package = ?1)"
            " AND (?2 IS NULL OR host = ?2) ORDER BY recorded_at DESC, id DESC LIMIT ?3",
            (package, host, limit),
        )
        return [self._outcome(row) for row in rows]

    def outcomes(self, package: str, version: str) -> list[Outcome]:
        """Every recorded outcome of ``package`` at ``version`` (any host, any run), oldest first.

        This is :class:`patchpilot.agents.testing.OutcomeHistory` as a plain store query.
        """
        rows = self._conn().execute(
            "SELECT run_id, host, package, from_version, to_version, status, error, recorded_at"
            " FROM deployment_outcomes WHERE package = ? AND to_version = ?"
            " ORDER BY recorded_at, id",
            (package, version),
        )
        return [self._outcome(row) for row in rows]

    @staticmethod
    def _outcome(row: tuple[Any, ...]) -> Outcome:
        run_id, host, name, before, after, status, error, recorded = row
        return Outcome(
            run_id=run_id,
            host=host,
            package=name,
            from_version=before,
            to_version=after,
            status=OutcomeStatus(status),
            error=error,
            at=from_db_time(recorded),
        )

"""Runs: one row per scan or patch run, with its status, parameters and summary.

Graph state carries only run ids; :class:`RunsRepository` records a run's start, status
changes and end, and lists them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from patchpilot.core.models import (
    utcnow,
)
from patchpilot.core.store.base import StoreBase, json_text
from patchpilot.core.store.records import (
    RunRecord,
    StoreError,
)
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = ["RunsRepository"]


class RunsRepository(StoreBase):
    """Run records (start, status, end, listing); part of ``Store``."""

    def create_run(
        self,
        run_id: str,
        *,
        kind: str,
        target: str,
        params: dict[str, Any],
        started_at: datetime | None = None,
    ) -> None:
        """Record the start of a run (status ``running``).

        Calling it again for the same run id, kind and target (a resumed graph node) is a
        no-op.

        Args:
            run_id: Unique id.
            kind: ``scan``, ``plan``, ``deploy``...
            target: The inventory target or host pattern.
            params: JSON-serialisable parameters.
            started_at: Start time (default now).

        Raises:
            StoreError: If the run id exists with another kind or target.
        """
        with self._transaction(f"create run {run_id}") as conn:
            row = conn.execute(
                "SELECT kind, target FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is not None:
                if (row[0], row[1]) != (kind, target):
                    raise StoreError(f"run {run_id} exists already as a {row[0]} run of {row[1]!r}")
                return
            conn.execute(
                "INSERT INTO runs (run_id, kind, target, params, status, started_at)"
                " VALUES (?, ?, ?, ?, 'running', ?)",
                (run_id, kind, target, json_text(params), to_db_time(started_at or utcnow())),
            )

    def finish_run(self, run_id: str, *, status: str, summary: dict[str, Any]) -> None:
        """Record the end of a run.

        Args:
            run_id: The run.
            status: Final status (``succeeded``, ``failed``, ``partial``...).
            summary: JSON-serialisable summary.

        Raises:
            StoreError: If the run is unknown.
        """
        with self._transaction(f"finish run {run_id}") as conn:
            cursor = conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
                (status, to_db_time(utcnow()), json_text(summary), run_id),
            )
            if cursor.rowcount != 1:
                raise StoreError(f"unknown run {run_id!r}")

    def set_run_status(self, run_id: str, status: str) -> None:
        """Change only the status of a run (``awaiting_approval``, ``running`` again...).

        Unlike :meth:`finish_run`, the finish time and summary are left as they are.

        Args:
            run_id: The run.
            status: The new status.

        Raises:
            StoreError: If the run is unknown or the status is empty.
        """
        if not status or not status.strip():
            raise StoreError(f"set status of run {run_id}: status is empty")
        with self._transaction(f"set status of run {run_id}") as conn:
            cursor = conn.execute("UPDATE runs SET status = ? WHERE run_id = ?", (status, run_id))
            if cursor.rowcount != 1:
                raise StoreError(f"unknown run {run_id!r}; create_run() it first")

    _RUN_COLUMNS: Final = (
        "SELECT run_id, kind, target, params, status, started_at, finished_at, summary FROM runs"
    )

    @staticmethod
    def _run(row: tuple[Any, ...]) -> RunRecord:
        run_id, kind, target, params, status, started, finished, summary = row
        return RunRecord(
            run_id=run_id,
            kind=kind,
            target=target,
            params=json.loads(params),
            status=status,
            started_at=from_db_time(started),
            finished_at=from_db_time(finished) if finished else None,
            summary=json.loads(summary) if summary is not None else None,
        )

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        """The most recent runs, newest first."""
        rows = self._conn().execute(
            self._RUN_COLUMNS + " ORDER BY started_at DESC, seq DESC LIMIT ?", (limit,)
        )
        return [self._run(row) for row in rows]

    def get_run(self, run_id: str) -> RunRecord | None:
        """One run, or None if unknown."""
        row = self._conn().execute(self._RUN_COLUMNS + " WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else self._run(row)

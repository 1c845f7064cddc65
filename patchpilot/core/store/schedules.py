"""Schedules and their occurrences: what fires when, and each occurrence claimed exactly once.

The ``schedules`` table holds each :class:`~patchpilot.core.schedules.Schedule` as its JSON
document; ``schedule_occurrences`` has one row per (schedule, occurrence start). Claiming an
occurrence is inserting its row inside one ``BEGIN IMMEDIATE`` transaction: the primary key
makes a second insert of the same occurrence (another thread, another process, the same
service after a restart) a no-op, so whoever inserted the row owns the occurrence and nobody
else ever does. Which occurrences are due, late or missed is decided by
:func:`patchpilot.app.schedules.claim_due`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import ValidationError

from patchpilot.core.schedules import Occurrence, Schedule
from patchpilot.core.store.base import StoreBase, db_now
from patchpilot.core.store.records import StoreError
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = ["SchedulesRepository"]

_INSERT_OCCURRENCE = (
    "INSERT OR IGNORE INTO schedule_occurrences (schedule_id, occurrence_at, kind, timezone,"
    " status, reason, window_end, cutoff_at, claimed_at, run_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
)
_SELECT_OCCURRENCES = (
    "SELECT schedule_id, occurrence_at, kind, timezone, status, reason, window_end, cutoff_at,"
    " claimed_at, run_id FROM schedule_occurrences"
)


def _schedule(doc: str) -> Schedule:
    try:
        return Schedule.model_validate_json(doc)
    except ValidationError as exc:
        raise StoreError(f"a stored schedule does not validate: {exc}") from exc


class SchedulesRepository(StoreBase):
    """Schedules and their claimed occurrences; part of ``Store``."""

    def add_schedule(self, schedule: Schedule) -> None:
        """Store a new schedule.

        Raises:
            StoreError: a schedule with this id exists.
        """
        with self._transaction(f"add schedule {schedule.id}") as conn:
            if conn.execute("SELECT 1 FROM schedules WHERE id = ?", (schedule.id,)).fetchone():
                raise StoreError(f"schedule {schedule.id} exists already")
            conn.execute(
                "INSERT INTO schedules (id, kind, enabled, created_at, doc) VALUES (?, ?, ?, ?, ?)",
                (
                    schedule.id,
                    schedule.kind,
                    int(schedule.enabled),
                    to_db_time(schedule.created_at),
                    schedule.model_dump_json(),
                ),
            )

    def schedules(self, *, enabled_only: bool = False) -> list[Schedule]:
        """Every schedule (or only the enabled ones), oldest first."""
        sql = "SELECT doc FROM schedules"
        if enabled_only:
            sql += " WHERE enabled = 1"
        with self._transaction("list schedules", write=False) as conn:
            rows = conn.execute(sql + " ORDER BY created_at, id").fetchall()
        return [_schedule(row[0]) for row in rows]

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        """The schedule with this id (``None``: none)."""
        with self._transaction(f"read schedule {schedule_id}", write=False) as conn:
            row = conn.execute("SELECT doc FROM schedules WHERE id = ?", (schedule_id,)).fetchone()
        return _schedule(row[0]) if row else None

    def remove_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule (its occurrences stay as history). False: there was none."""
        with self._transaction(f"remove schedule {schedule_id}") as conn:
            cursor = conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))
        return cursor.rowcount == 1

    def last_occurrence(self, schedule_id: str) -> datetime | None:
        """The start of the schedule's latest recorded occurrence (claimed or missed)."""
        with self._transaction(f"last occurrence of {schedule_id}", write=False) as conn:
            row = conn.execute(
                "SELECT MAX(occurrence_at) FROM schedule_occurrences WHERE schedule_id = ?",
                (schedule_id,),
            ).fetchone()
        return from_db_time(row[0]) if row and row[0] else None

    def claim_occurrences(
        self, schedule_id: str, occurrences: Sequence[Occurrence], *, claimed_at: datetime
    ) -> list[Occurrence]:
        """Record ``occurrences`` of one schedule in one transaction; return those this call
        inserted (each one exactly once across every thread and process).

        An occurrence already recorded, or not after the schedule's latest recorded one (a
        concurrent claimer got there first), is left out; nothing is recorded when the
        schedule was removed or disabled meanwhile.
        """
        claimed: list[Occurrence] = []
        when = db_now(claimed_at)
        with self._transaction(f"claim occurrences of {schedule_id}") as conn:
            row = conn.execute(
                "SELECT enabled FROM schedules WHERE id = ?", (schedule_id,)
            ).fetchone()
            if row is None or not row[0]:
                return []
            last = conn.execute(
                "SELECT MAX(occurrence_at) FROM schedule_occurrences WHERE schedule_id = ?",
                (schedule_id,),
            ).fetchone()[0]
            for occ in sorted(occurrences, key=lambda o: o.at):
                if occ.schedule_id != schedule_id:
                    raise StoreError(f"occurrence of {occ.schedule_id} claimed as {schedule_id}")
                at = to_db_time(occ.at)
                if last is not None and at <= last:
                    continue
                cursor = conn.execute(
                    _INSERT_OCCURRENCE,
                    (
                        schedule_id,
                        at,
                        occ.kind,
                        occ.timezone,
                        occ.status,
                        occ.reason,
                        to_db_time(occ.window_end),
                        to_db_time(occ.cutoff_at),
                        when,
                    ),
                )
                if cursor.rowcount == 1:
                    claimed.append(occ.model_copy(update={"claimed_at": from_db_time(when)}))
        return claimed

    def attach_occurrence_run(self, schedule_id: str, at: datetime, run_id: str) -> None:
        """Record the run an occurrence started.

        Raises:
            StoreError: no such occurrence.
        """
        with self._transaction(f"attach run {run_id} to {schedule_id}") as conn:
            cursor = conn.execute(
                "UPDATE schedule_occurrences SET run_id = ?"
                " WHERE schedule_id = ? AND occurrence_at = ?",
                (run_id, schedule_id, to_db_time(at)),
            )
            if cursor.rowcount != 1:
                raise StoreError(f"no occurrence of {schedule_id} at {at.isoformat()}")

    def occurrences(self, schedule_id: str | None = None, *, limit: int = 100) -> list[Occurrence]:
        """Recorded occurrences (of one schedule, or all), newest first."""
        sql = _SELECT_OCCURRENCES
        params: tuple[object, ...] = ()
        if schedule_id is not None:
            sql += " WHERE schedule_id = ?"
            params = (schedule_id,)
        sql += " ORDER BY occurrence_at DESC LIMIT ?"
        with self._transaction("list occurrences", write=False) as conn:
            rows = conn.execute(sql, (*params, max(0, limit))).fetchall()
        found = []
        for sid, at, kind, timezone, status, reason, end, cutoff, claimed, run_id in rows:
            found.append(
                Occurrence(
                    schedule_id=sid,
                    kind=kind,
                    at=from_db_time(at),
                    window_end=from_db_time(end),
                    cutoff_at=from_db_time(cutoff),
                    timezone=timezone,
                    status=status,
                    reason=reason,
                    claimed_at=from_db_time(claimed),
                    run_id=run_id,
                )
            )
        return found

"""Schedule use cases: add, list, remove, preview, and claim what is due (exactly once).

Every interface calls these (CLI ``patchpilot schedules``, ``/api/v1/schedules``); the
service's scheduler loop calls :func:`claim_due` every few seconds and starts what it returns.

Exactly once: an occurrence is claimed by inserting its ``(schedule_id, occurrence start)`` row
in one store transaction (``Store.claim_occurrences``); two schedulers racing (threads,
processes, a service restarted mid-way) cannot both claim it.

Missed occurrences (the service was down at their time): an occurrence is ``on-time`` when
claimed within :data:`ON_TIME` of its start. Later, the schedule's ``missed`` policy decides:
``run-late`` starts the latest missed occurrence once when it is at most ``grace`` late and its
window's cutoff has not passed (status ``late``), else it is recorded ``missed``; ``skip``
records it ``missed``. Older missed occurrences are superseded by the latest and recorded
``missed`` too (at most :data:`MAX_BACKLOG` rows; the reason of the oldest recorded counts the
rest). Every ``missed`` occurrence is in :func:`claim_due`'s result with its reason (the
notifier turns them into ``schedule-missed`` events); only :attr:`Occurrence.runnable` ones are
to be started.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from pydantic import ValidationError

from patchpilot.core.audit import AuditLog
from patchpilot.core.errors import InvalidInputError, UnknownTargetError
from patchpilot.core.models import utcnow
from patchpilot.core.schedules import (
    Occurrence,
    Schedule,
    ScheduleSpec,
    iter_occurrences,
    next_occurrences,
    parse_only_item,
)
from patchpilot.core.store import Store

__all__ = [
    "MAX_BACKLOG",
    "ON_TIME",
    "add_schedule",
    "claim_due",
    "get_schedule",
    "list_schedules",
    "next_occurrences",
    "parse_spec",
    "remove_schedule",
    "schedule_documents",
    "start_arguments",
]

log = structlog.get_logger(__name__)

ON_TIME: Final[timedelta] = timedelta(minutes=2)
"""An occurrence claimed at most this long after its start is on time (not missed)."""
MAX_BACKLOG: Final[int] = 50
"""At most this many missed occurrences of one schedule are recorded per claim."""


def parse_spec(data: dict[str, Any] | ScheduleSpec) -> ScheduleSpec:
    """A validated :class:`ScheduleSpec` from its JSON form.

    Raises:
        InvalidInputError: the spec is refused (the message says which field and why).
    """
    if isinstance(data, ScheduleSpec):
        return data
    try:
        return ScheduleSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'schedule'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInputError("schedule", problems) from exc


def add_schedule(
    store: Store,
    spec: dict[str, Any] | ScheduleSpec,
    *,
    actor: str,
    audit: AuditLog | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Store a new schedule of ``spec`` created by ``actor`` (audit-logged when ``audit``).

    Raises:
        InvalidInputError: the spec is refused.
    """
    schedule = Schedule.create(parse_spec(spec), actor=actor, at=now or utcnow())
    store.add_schedule(schedule)
    log.info("schedule.added", schedule_id=schedule.id, kind=schedule.kind, actor=actor)
    if audit is not None:
        audit.record("schedule.added", actor=actor, details={"schedule": schedule.document()})
    return schedule


def list_schedules(store: Store) -> list[Schedule]:
    """Every stored schedule, oldest first."""
    return store.schedules()


def get_schedule(store: Store, schedule_id: str) -> Schedule:
    """The schedule with this id.

    Raises:
        UnknownTargetError: no such schedule.
    """
    schedule = store.get_schedule(schedule_id)
    if schedule is None:
        raise UnknownTargetError(
            f"no schedule {schedule_id!r} (see `patchpilot schedules list`)", key="schedule_id"
        )
    return schedule


def remove_schedule(
    store: Store, schedule_id: str, *, actor: str, audit: AuditLog | None = None
) -> Schedule:
    """Remove a schedule (its recorded occurrences stay); returns what was removed.

    Raises:
        UnknownTargetError: no such schedule.
    """
    schedule = get_schedule(store, schedule_id)
    if not store.remove_schedule(schedule_id):
        raise UnknownTargetError(f"no schedule {schedule_id!r}", key="schedule_id")
    log.info("schedule.removed", schedule_id=schedule_id, actor=actor)
    if audit is not None:
        audit.record("schedule.removed", actor=actor, details={"schedule_id": schedule_id})
    return schedule


def schedule_documents(
    schedules: list[Schedule], now: datetime, *, upcoming: int = 1
) -> list[dict[str, Any]]:
    """The JSON form of ``schedules``, each with its next ``upcoming`` occurrence start(s)."""
    return [
        {
            **s.document(),
            "next": [o.at.isoformat() for o in next_occurrences(s, now, upcoming)]
            if s.enabled
            else [],
        }
        for s in schedules
    ]


def _decide(
    schedule: Schedule, due: list[Occurrence], now: datetime, *, uncounted: int = 0
) -> list[Occurrence]:
    """Mark ``due`` occurrences (oldest first, all at or before ``now``) on-time, late or
    missed, per the schedule's policy (``uncounted``: earlier due ones already dropped)."""
    if not due:
        return []
    latest = due[-1]
    older = due[:-1]
    decided: list[Occurrence] = []
    if older:
        dropped = max(0, len(older) - MAX_BACKLOG)
        kept = older[dropped:]
        dropped += uncounted
        for i, occ in enumerate(kept):
            reason = f"missed: the service was not running at {occ.at.isoformat()}"
            reason += "; superseded by a later occurrence"
            if i == 0 and dropped:
                reason += f" ({dropped} earlier missed occurrence(s) not recorded)"
            decided.append(occ.model_copy(update={"status": "missed", "reason": reason}))
    late = now - latest.at
    if late <= ON_TIME:
        decided.append(latest.model_copy(update={"status": "on-time"}))
        return decided
    behind = f"{int(late.total_seconds() // 60)} min late"
    if schedule.missed == "skip":
        status, reason = "missed", f"missed ({behind}); the schedule's policy is skip"
    elif late > schedule.grace:
        status, reason = "missed", f"missed ({behind}): past the grace period of {schedule.grace}"
    elif now >= latest.cutoff_at:
        status, reason = "missed", f"missed ({behind}): its window's cutoff has passed"
    else:
        status, reason = "late", f"run late ({behind}), within the grace period"
    decided.append(latest.model_copy(update={"status": status, "reason": reason}))
    return decided


def claim_due(store: Store, now: datetime | None = None) -> list[Occurrence]:
    """Claim every occurrence due at ``now`` of every enabled schedule, each exactly once.

    Returns what this call claimed, oldest first per schedule: ``on-time`` and ``late``
    occurrences to start now (:attr:`Occurrence.runnable`), each with its ``schedule``, and
    the ``missed`` ones (recorded with their reason, not to be started). An occurrence another
    claimer recorded first is not returned.
    """
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    claimed: list[Occurrence] = []
    for schedule in store.schedules(enabled_only=True):
        last = store.last_occurrence(schedule.id)
        due: list[Occurrence] = []
        uncounted = 0
        for occ in iter_occurrences(schedule, last or schedule.created_at):
            if occ.at > now:
                break
            due.append(occ)
            if len(due) > MAX_BACKLOG * 4:
                uncounted += len(due) - (MAX_BACKLOG + 1)
                due = due[-(MAX_BACKLOG + 1) :]
        decided = _decide(schedule, due, now, uncounted=uncounted)
        if not decided:
            continue
        with_schedule = [o.model_copy(update={"schedule": schedule}) for o in decided]
        got = store.claim_occurrences(schedule.id, with_schedule, claimed_at=now)
        for occ in got:
            log.info(
                "schedule.occurrence_claimed" if occ.runnable else "schedule.occurrence_missed",
                schedule_id=schedule.id,
                at=occ.at.isoformat(),
                status=occ.status,
                reason=occ.reason,
            )
        claimed.extend(got)
    return claimed


def start_arguments(occurrence: Occurrence) -> dict[str, Any]:
    """The keyword arguments of :func:`patchpilot.app.runs.start` (kind ``run``) or
    :func:`patchpilot.app.scans.start` (kind ``scan``) for a claimed occurrence, besides the
    settings, store, hosts (``limit`` selects them), actor and target.

    A run gets ``only``, ``limit``, ``security_only`` and ``occurrence`` (so it carries
    ``trigger: schedule``, does not start before the occurrence, honours its cutoff and its
    approval expires at the window's end); a scan gets ``trigger`` and ``schedule_id``.
    ``security: true`` is ``security_only``: the run plans only the baseline's updates that
    close a known security advisory and lists the others as excluded (not a security update).

    Raises:
        ValueError: the occurrence carries no schedule, or is not runnable.
    """
    schedule = occurrence.schedule
    if schedule is None or not occurrence.runnable:
        raise ValueError("only a claimed, runnable occurrence with its schedule can start")
    if schedule.kind == "scan":
        return {"trigger": "schedule", "schedule_id": schedule.id}
    return {
        "only": [parse_only_item(item) for item in schedule.only] or None,
        "limit": schedule.limit,
        "security_only": schedule.security,
        "occurrence": occurrence,
    }

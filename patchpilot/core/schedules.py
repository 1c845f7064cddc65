"""Stored schedules: when the service scans or patches by itself (cron or RRULE, IANA zone).

A :class:`Schedule` (kept in the store, :mod:`patchpilot.core.store.schedules`) fires at each
time its ``cron`` expression (5 fields) or ``rrule`` (RFC 5545, python-dateutil) matches, as a
wall-clock time in its ``timezone``: ``0 22 * * *`` in ``Europe/Berlin`` is 22:00 in Berlin in
winter and in summer. A time that does not exist on a DST change (02:30 when clocks jump from
02:00 to 03:00) fires at the same instant one hour later on the new offset (03:30); a time
that exists twice (02:30 when clocks go back) fires once, at its first instant. An occurrence
on a ``blackouts`` date (a day in the schedule's zone) does not fire.

Each occurrence is a window (AWS SSM maintenance-window semantics): it opens at ``at`` and
lasts ``duration``; no new host starts after ``cutoff_at = at + duration - cutoff``, and a
patch run's approval expires at ``window_end = at + duration``.

This module is pure (no store, no clock): :func:`next_occurrences` computes times;
claiming an occurrence exactly once is the store's (:meth:`SchedulesRepository.claim_occurrences
<patchpilot.core.store.schedules.SchedulesRepository.claim_occurrences>`) and the policy for
missed occurrences is :func:`patchpilot.app.schedules.claim_due`.

>>> s = Schedule.create(ScheduleSpec(kind="scan", cron="0 22 * * *", timezone="Europe/Berlin"),
...                     actor="ops", at=datetime(2026, 3, 28, tzinfo=UTC))
>>> [o.at.isoformat() for o in next_occurrences(s, datetime(2026, 3, 28, tzinfo=UTC), 2)]
['2026-03-28T21:00:00+00:00', '2026-03-29T20:00:00+00:00']
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final, Literal, Self
from zoneinfo import ZoneInfo

from croniter import croniter  # type: ignore[import-untyped]
from dateutil.rrule import rrule, rrulestr  # type: ignore[import-untyped]
from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from patchpilot.core.models import Ecosystem
from patchpilot.core.schedule import MAX_DURATION, parse_duration, zone
from patchpilot.core.validate import split_pin, validate_package_name

__all__ = [
    "MAX_SCAN_ITERATIONS",
    "Occurrence",
    "OccurrenceStatus",
    "Schedule",
    "ScheduleKind",
    "ScheduleSpec",
    "Trigger",
    "format_duration",
    "iter_occurrences",
    "new_schedule_id",
    "next_occurrences",
    "parse_only_item",
]

Trigger = Literal["cli", "api", "chat", "schedule"]
"""What started a run: a command, an API request, the chat, or a schedule."""
ScheduleKind = Literal["scan", "run", "load"]
"""A schedule starts a scan or a patch run, or collects each host's load (``load``: read-only,
the history ``patchpilot schedules suggest`` ranks window slots by)."""
MissedPolicy = Literal["run-late", "skip"]
OccurrenceStatus = Literal["on-time", "late", "missed"]
"""``on-time``/``late``: claimed to start now; ``missed``: recorded, not started (skipped)."""

MAX_SCAN_ITERATIONS: Final[int] = 100_000
"""At most this many candidate times are examined per query (a guard against runaway rules)."""
_ID = re.compile(r"^sch-[0-9a-f]{12}$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#-]+$")
_RRULE_TEXT = re.compile(r"^[A-Za-z0-9=;:,+\-/ \n\r]+$")
_MAX_TEXT = 500


def new_schedule_id() -> str:
    """A fresh schedule id: ``sch-`` and 12 hex digits."""
    return f"sch-{secrets.token_hex(6)}"


def format_duration(value: timedelta) -> str:
    """ISO-8601 text of a duration (``PT3H``, ``PT1H30M``, ``P1DT2H``, ``PT0S``).

    >>> format_duration(timedelta(hours=1, minutes=30))
    'PT1H30M'
    """
    total = int(value.total_seconds())
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "P" + (f"{days}D" if days else "")
    clock = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    if clock or not days:
        text += "T" + (clock or "0S")
    return text


def _duration(value: Any) -> timedelta:
    """A duration: ISO-8601, minutes, or the CLI's short forms (``3h``, ``90m``, ``1d``)."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,4})\s*([smhdw])\s*", value.lower())
        if match:
            n, unit = int(match[1]), match[2]
            key = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]
            return timedelta(**{key: n})
    return parse_duration(value)


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)
]
"""A duration in input: ``PT3H``, ``3h``, ``90m``, ``1d`` or minutes; in output ``PT3H``."""


def _check_cron(value: Any) -> str:
    fields = str(value).split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {value!r} must have exactly 5 fields (minute hour day-of-month month "
            f"day-of-week), got {len(fields)}"
        )
    text = " ".join(fields)
    if not all(_CRON_FIELD.match(f) for f in fields) or not croniter.is_valid(text):
        raise ValueError(f"invalid cron expression {value!r}")
    return text


def _parse_rrule(text: str, anchor: datetime) -> rrule:
    """The rule of ``text`` (naive local times; ``anchor`` is DTSTART when the text has none)."""
    if "DTSTART" in text.upper():
        parsed = rrulestr(text, ignoretz=True)
    else:
        parsed = rrulestr(text, dtstart=anchor)
    if not isinstance(parsed, rrule):
        raise ValueError("give one RRULE (an RRULE set with EXRULE/RDATE is not supported)")
    return parsed


def _check_rrule(value: Any) -> str:
    text = str(value).strip()
    if not text or len(text) > _MAX_TEXT or not _RRULE_TEXT.match(text):
        raise ValueError(f"invalid RRULE {value!r} (e.g. 'FREQ=WEEKLY;BYDAY=SA;BYHOUR=2')")
    if text.upper().startswith("RRULE:"):
        text = text[len("RRULE:") :]
    try:
        rule = _parse_rrule(text, datetime(2000, 1, 1))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"invalid RRULE {value!r}: {exc}") from exc
    if not any(True for _ in rule.xafter(datetime(2000, 1, 1), count=1, inc=True)):
        raise ValueError(f"RRULE {value!r} never fires")
    return text


def parse_only_item(value: str) -> tuple[str, str | None]:
    """``PKG`` or ``PKG=VERSION``, validated (as ``patchpilot run --only``).

    Raises:
        ValueError: not a valid package name or version.
    """
    text = value.strip()
    if "=" in text:
        return split_pin(text, Ecosystem.DEBIAN)
    return validate_package_name(text, Ecosystem.DEBIAN), None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleSpec(_Model):
    """What a person asks for (CLI ``schedules add``, ``POST /api/v1/schedules``).

    ``{"kind": "scan", "cron": "*/5 * * * *", "timezone": "UTC"}`` is a whole spec: every
    other field has a default. Exactly one of ``cron`` and ``rrule``; ``only`` and
    ``security`` only for ``kind: run``.
    """

    kind: ScheduleKind
    cron: Annotated[str, BeforeValidator(_check_cron)] | None = Field(
        default=None, description="5-field cron (minute hour day-of-month month day-of-week)"
    )
    rrule: Annotated[str, BeforeValidator(_check_rrule)] | None = Field(
        default=None, description="an RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=SA;BYHOUR=2"
    )
    timezone: Annotated[str, BeforeValidator(lambda v: zone(str(v)).key)] = Field(
        default="UTC", description="IANA time zone the times are wall-clock times in"
    )
    duration: Duration = Field(default=timedelta(hours=1), description="the window's length")
    cutoff: Duration = Field(
        default=timedelta(0), description="no new host starts in the window's last `cutoff`"
    )
    blackouts: tuple[date, ...] = Field(
        default=(), description="days (in `timezone`) on which the schedule does not fire"
    )
    limit: str | None = Field(
        default=None, max_length=_MAX_TEXT, description="host pattern (the --limit language)"
    )
    only: tuple[str, ...] = Field(default=(), description="PKG or PKG=VERSION items (run only)")
    security: bool = Field(
        default=False,
        validation_alias=AliasChoices("security", "security_only"),
        description="security updates only (run only; also spelled security_only): the run "
        "plans only updates that close a known security advisory, the others are excluded "
        "(not a security update)",
    )
    missed: MissedPolicy = Field(
        default="run-late", description="an occurrence missed while the service was down"
    )
    grace: Duration = Field(
        default=timedelta(hours=1), description="how late a missed occurrence may still run"
    )
    enabled: bool = True

    @field_validator("only")
    @classmethod
    def _only(cls, items: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f"{n}={v}" if v else n for n, v in map(parse_only_item, items))

    @field_validator("limit")
    @classmethod
    def _limit(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or not value.isprintable()):
            raise ValueError("limit must be a printable, non-empty host pattern")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.cron is None) == (self.rrule is None):
            raise ValueError("give exactly one of cron and rrule")
        if not timedelta(0) < self.duration <= MAX_DURATION:
            raise ValueError("duration must be above 0 and at most 7 days")
        if not timedelta(0) <= self.cutoff < self.duration:
            raise ValueError("cutoff must be at least 0 and shorter than duration")
        if not timedelta(0) <= self.grace <= MAX_DURATION:
            raise ValueError("grace must be between 0 and 7 days")
        if self.kind != "run" and (self.only or self.security):
            raise ValueError("only and security apply to kind 'run' only")
        if self.only and self.security:
            raise ValueError("give only or security, not both")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return zone(self.timezone)


class Schedule(ScheduleSpec):
    """A stored schedule: its spec plus id, author and creation time.

    Occurrences are counted from ``created_at`` on (a schedule never fires for a time before
    it existed).
    """

    id: str = Field(pattern=_ID.pattern)
    created_by: str = Field(min_length=1, max_length=200)
    created_at: AwareDatetime

    @classmethod
    def create(
        cls, spec: ScheduleSpec, *, actor: str, at: datetime, schedule_id: str | None = None
    ) -> Schedule:
        """A new schedule of ``spec`` created by ``actor`` at ``at``."""
        return cls(
            **spec.model_dump(),
            id=schedule_id or new_schedule_id(),
            created_by=actor,
            created_at=at.astimezone(UTC),
        )

    def spec(self) -> ScheduleSpec:
        """The spec part."""
        data = self.model_dump(exclude={"id", "created_by", "created_at"})
        return ScheduleSpec(**data)

    def document(self) -> dict[str, Any]:
        """The JSON form (list/next output, the API's schedule document)."""
        return self.model_dump(mode="json")


class Occurrence(_Model):
    """One occurrence of a schedule: its window, and (once claimed) what became of it.

    ``at`` is the key: the store holds at most one row per ``(schedule_id, at)``.
    """

    schedule_id: str
    kind: ScheduleKind
    at: AwareDatetime = Field(description="the occurrence's start (UTC)")
    window_end: AwareDatetime = Field(description="at + duration: a run's approval expires then")
    cutoff_at: AwareDatetime = Field(description="at + duration - cutoff: no new host after it")
    timezone: str
    status: OccurrenceStatus | None = Field(
        default=None, description="once claimed: on-time, late or missed (None: upcoming)"
    )
    reason: str | None = None
    claimed_at: AwareDatetime | None = None
    run_id: str | None = None
    schedule: Schedule | None = Field(
        default=None, description="the schedule as claimed (so the executor can start it)"
    )

    @property
    def runnable(self) -> bool:
        """True for a claimed occurrence to start now (``on-time`` or ``late``)."""
        return self.status in ("on-time", "late")

    def document(self) -> dict[str, Any]:
        """The JSON form (without the embedded schedule)."""
        return self.model_dump(mode="json", exclude={"schedule"})


def _local_naive(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def _to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """A wall-clock time in ``tz`` as UTC (fold=0: a repeated time is its first instant; a
    time skipped by DST lands one offset later)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _local_times(schedule: Schedule, after_local: datetime) -> Iterator[datetime]:
    """Naive wall-clock times strictly after ``after_local``, in order."""
    if schedule.cron is not None:
        it = croniter(schedule.cron, after_local)
        for _ in range(MAX_SCAN_ITERATIONS):
            yield it.get_next(datetime)
        return
    assert schedule.rrule is not None
    anchor = _local_naive(schedule.created_at, schedule.zone).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    rule = _parse_rrule(schedule.rrule, anchor)
    current = after_local
    for _ in range(MAX_SCAN_ITERATIONS):
        nxt = rule.after(current, inc=False)
        if nxt is None:
            return
        yield nxt
        current = nxt


def iter_occurrences(schedule: Schedule, after: datetime) -> Iterator[Occurrence]:
    """Occurrences of ``schedule`` strictly after ``after`` (and not before it was created),
    in time order, skipping blackout dates. Ends after :data:`MAX_SCAN_ITERATIONS` candidate
    times or when an RRULE has no more."""
    tz = schedule.zone
    start = max(after, schedule.created_at)
    last_utc: datetime | None = None
    blackouts = set(schedule.blackouts)
    for local in _local_times(schedule, _local_naive(start, tz)):
        at = _to_utc(local, tz)
        if at <= start or (last_utc is not None and at <= last_utc):
            continue  # a gap time mapped onto an instant already passed
        last_utc = at
        if local.date() in blackouts:
            continue
        yield Occurrence(
            schedule_id=schedule.id,
            kind=schedule.kind,
            at=at,
            window_end=at + schedule.duration,
            cutoff_at=at + schedule.duration - schedule.cutoff,
            timezone=schedule.timezone,
        )


def next_occurrences(schedule: Schedule, now: datetime, n: int) -> list[Occurrence]:
    """The next ``n`` occurrences after ``now`` (fewer when the rule ends)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    found: list[Occurrence] = []
    if n <= 0:
        return found
    for occurrence in iter_occurrences(schedule, now):
        found.append(occurrence)
        if len(found) >= n:
            break
    return found

"""Schedule policy models: maintenance windows, blackouts, rings, waves, rate control, reboots.

This is a core module (no agent imports). It only *validates* the ``schedule:`` section of the
policy file; :mod:`patchpilot.agents.scheduling` turns it into window slots, rings, waves and a rate
controller. The semantics are copied from AWS SSM (maintenance windows, rate control) and
Ansible (``serial``), see ``design/research/patch-orchestrators.md`` b1, b2 and b5.

Example (the ``schedule:`` section of ``configs/policy.yaml``)::

    schedule:
      windows:
        - name: weeknights
          cron: "0 22 * * 1-5"     # 5-field cron, in `timezone`
          duration: PT3H           # ISO-8601 duration, or minutes (180)
          cutoff: PT1H             # no new host starts in the last hour
          timezone: Europe/Berlin  # IANA name
      blackouts: [2025-12-24, {start: 2025-12-31T18:00:00+01:00, end: 2026-01-02T08:00:00+01:00}]
      rings:
        - {name: canary, tags: [canary]}
        - {name: early, tags: [staging]}
        - {name: broad}
      waves: [1, "50%"]
      rate: {max_concurrency: 2, max_errors: 0}
      reboot: never

>>> SchedulePolicy().is_always_open
True
>>> parse_duration("PT1H30M")
datetime.timedelta(seconds=5400)
>>> parse_count_or_percent("20%")
(20, True)
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from patchpilot.core.models import Host

__all__ = [
    "Blackout",
    "BlackoutPeriod",
    "CountOrPercent",
    "MaintenanceWindow",
    "RatePolicy",
    "RebootPolicy",
    "Ring",
    "RingSpec",
    "SchedulePolicy",
    "Serial",
    "WindowSlot",
    "parse_count_or_percent",
    "parse_duration",
    "zone",
]

_ISO_DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)
_PERCENT = re.compile(r"^(?P<n>\d{1,3})%$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#-]+$")
#: Longest window (and cutoff) accepted.
MAX_DURATION = timedelta(days=7)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: Any) -> timedelta:
    """Parse a window duration or cutoff: ISO-8601 (``PT3H``, ``PT90M``, ``P1D``) or minutes.

    Years and months are refused (their length varies).

    >>> parse_duration("PT3H")
    datetime.timedelta(seconds=10800)
    >>> parse_duration(90)
    datetime.timedelta(seconds=5400)

    Raises:
        ValueError: not a duration in one of those forms.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected an ISO-8601 duration such as 'PT3H' or a number of minutes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(minutes=value)
    if isinstance(value, str):
        text = value.strip().upper()
        if text.isdigit():
            return timedelta(minutes=int(text))
        match = _ISO_DURATION.match(text)
        if match and text not in ("P", "PT") and not text.endswith("T"):
            parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
            return timedelta(
                weeks=parts.get("w", 0),
                days=parts.get("d", 0),
                hours=parts.get("h", 0),
                minutes=parts.get("m", 0),
                seconds=parts.get("s", 0),
            )
    raise ValueError(
        f"not a duration: {value!r} (use ISO-8601 like 'PT3H', 'PT90M', 'P1D', or minutes)"
    )


def parse_count_or_percent(value: Any) -> tuple[int, bool]:
    """Parse an absolute number (``3``) or a whole percentage (``"10%"``).

    Returns:
        ``(n, is_percent)``.

    >>> parse_count_or_percent(3)
    (3, False)
    >>> parse_count_or_percent("10%")
    (10, True)

    Raises:
        ValueError: anything else, or a percentage above 100.
    """
    if isinstance(value, bool):
        raise ValueError("expected a number or a percentage such as '10%'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("cannot be negative")
        return value, False
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text), False
        match = _PERCENT.match(text)
        if match:
            n = int(match["n"])
            if n > 100:
                raise ValueError(f"{value!r}: a percentage cannot exceed 100%")
            return n, True
    raise ValueError(f"not a number or a whole percentage such as '10%': {value!r}")


def _count_or_percent(value: Any) -> int | str:
    n, pct = parse_count_or_percent(value)
    return f"{n}%" if pct else n


def _positive_count_or_percent(value: Any) -> int | str:
    n, pct = parse_count_or_percent(value)
    if n < 1:
        raise ValueError("must be at least 1 (or at least '1%')")
    return f"{n}%" if pct else n


CountOrPercent = Annotated[int | str, BeforeValidator(_count_or_percent)]
"""``0``, ``3`` or ``"10%"`` (normalised: ints stay ints, percentages become ``"N%"``)."""
PositiveCountOrPercent = Annotated[int | str, BeforeValidator(_positive_count_or_percent)]


def _serial(value: Any) -> tuple[int | str, ...]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError("waves cannot be an empty list")
    return tuple(_positive_count_or_percent(item) for item in items)


Serial = Annotated[tuple[int | str, ...], BeforeValidator(_serial)]
"""Ansible ``serial``: ``5``, ``"20%"`` or a list ``[1, 5, "20%"]`` (always stored as a tuple)."""


def zone(name: str) -> ZoneInfo:
    """The :class:`~zoneinfo.ZoneInfo` of an IANA name.

    Raises:
        ValueError: unknown time zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r} (e.g. 'UTC', 'Europe/Berlin')") from exc


def _check_zone(name: str) -> str:
    zone(name)
    return name


def _check_cron(expr: str) -> str:
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expr!r} must have exactly 5 fields (minute hour day-of-month month "
            f"day-of-week), got {len(fields)}"
        )
    if not all(_CRON_FIELD.match(f) for f in fields) or not croniter.is_valid(" ".join(fields)):
        raise ValueError(f"invalid cron expression {expr!r}")
    return " ".join(fields)


class MaintenanceWindow(_Strict):
    """A recurring maintenance window (SSM semantics).

    It opens at each time ``cron`` matches (wall-clock time in ``timezone``) and lasts
    ``duration`` of elapsed time. No new host starts after ``start + duration - cutoff``;
    hosts already running may finish.

    >>> w = MaintenanceWindow(name="w", cron="0 15 * * *", duration="PT3H", cutoff="PT1H")
    >>> w.duration - w.cutoff
    datetime.timedelta(seconds=7200)
    """

    name: str = Field(min_length=1)
    cron: Annotated[str, BeforeValidator(lambda v: _check_cron(str(v)))]
    duration: Annotated[timedelta, BeforeValidator(parse_duration)]
    cutoff: Annotated[timedelta, BeforeValidator(parse_duration)] = timedelta(0)
    timezone: Annotated[str, BeforeValidator(lambda v: _check_zone(str(v)))] = "UTC"

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if not timedelta(0) < self.duration <= MAX_DURATION:
            raise ValueError("duration must be above 0 and at most 7 days")
        if self.cutoff < timedelta(0):
            raise ValueError("cutoff cannot be negative")
        if self.cutoff >= self.duration:
            raise ValueError("cutoff must be shorter than duration (else no host could start)")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The window's time zone."""
        return zone(self.timezone)


class BlackoutPeriod(_Strict):
    """A blackout between two timezone-aware datetimes (``start`` inclusive, ``end`` exclusive)."""

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("blackout end must be after its start")
        return self


def _blackout_kind(value: Any) -> str:
    return "period" if isinstance(value, dict | BlackoutPeriod) else "date"


Blackout = Annotated[
    Annotated[date, Tag("date")] | Annotated[BlackoutPeriod, Tag("period")],
    Discriminator(_blackout_kind),
]
"""A whole day (in the window's time zone) or an explicit period."""


class RingSpec(_Strict):
    """A deployment ring: hosts with any of ``tags`` or whose name matches any ``hosts`` glob.

    A host goes to the first ring that selects it; hosts no ring selects go to the last ring.
    """

    name: str = Field(min_length=1)
    tags: tuple[str, ...] = ()
    hosts: tuple[str, ...] = Field(default=(), description="host-name globs (fnmatch)")


class RebootPolicy(StrEnum):
    """Whether deployment may reboot a host (SSM ``RebootOption``)."""

    NEVER = "never"
    """Never reboot; installs that need one report ``installed-pending-reboot``."""
    IF_NEEDED = "if-needed"
    """Reboot inside the window when the run installed something that needs it."""


class RatePolicy(_Strict):
    """SSM rate control: ``max_concurrency`` (>= 1 or >= 1%) and ``max_errors`` (>= 0 or N%)."""

    max_concurrency: PositiveCountOrPercent = 2
    max_errors: CountOrPercent = 0


class SchedulePolicy(_Strict):
    """The ``schedule:`` section: when, in which order and how fast changes roll out."""

    windows: tuple[MaintenanceWindow, ...] = ()
    always_open: bool = Field(
        default=False, description="no maintenance window (same as an empty `windows` list)"
    )
    timezone: Annotated[str, BeforeValidator(lambda v: _check_zone(str(v)))] = Field(
        default="UTC", description="time zone of blackout dates when there is no window"
    )
    blackouts: tuple[Blackout, ...] = ()
    rings: tuple[RingSpec, ...] = Field(default=(RingSpec(name="all"),), min_length=1)
    waves: Serial = (1, "50%")
    rate: RatePolicy = Field(default_factory=RatePolicy)
    reboot: RebootPolicy = RebootPolicy.NEVER

    @field_validator("rings")
    @classmethod
    def _unique_rings(cls, rings: tuple[RingSpec, ...]) -> tuple[RingSpec, ...]:
        names = [r.name for r in rings]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate ring names: {dupes}")
        return rings

    @field_validator("windows")
    @classmethod
    def _unique_windows(
        cls, windows: tuple[MaintenanceWindow, ...]
    ) -> tuple[MaintenanceWindow, ...]:
        names = [w.name for w in windows]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate window names: {dupes}")
        return windows

    @model_validator(mode="after")
    def _open_or_windows(self) -> Self:
        if self.always_open and self.windows:
            raise ValueError("always_open is true but windows are listed: choose one")
        return self

    @property
    def is_always_open(self) -> bool:
        """True when no maintenance window restricts starts (blackouts still apply)."""
        return self.always_open or not self.windows


# --------------------------------------------------------------------------- resolved schedule


class WindowSlot(_Strict):
    """One occurrence of a maintenance window (or the always-open pseudo-window).

    ``last_start = end - cutoff``: hosts may start in ``[start, last_start)`` outside the
    ``blackouts``; ``end``/``last_start`` are ``None`` for the always-open window. Times are
    in UTC (exact across DST); ``timezone`` names the window's zone for display.
    """

    window: str = Field(description="window name ('always-open' when there is none)")
    start: AwareDatetime
    end: AwareDatetime | None
    last_start: AwareDatetime | None
    timezone: str
    blackouts: tuple[BlackoutPeriod, ...] = Field(
        default=(), description="blackout periods overlapping the slot (block every start)"
    )


class Ring(_Strict):
    """A resolved ring: its name and its hosts, in deployment order."""

    name: str
    hosts: tuple[Host, ...]

"""Scheduling: maintenance-window slots, rings, Ansible-style waves and SSM rate control.

Everything here is deterministic and side-effect free apart from logging; the current time is
always passed in (``now``, timezone-aware). Semantics copied from
``design/research/patch-orchestrators.md``:

* b5 (SSM maintenance windows): a window opens when its cron matches (wall-clock time in its
  IANA time zone), lasts ``duration`` of elapsed time, and no new host starts after
  ``start + duration - cutoff``. A blackout date blocks the whole day in the window's zone.
* b2 (Ansible ``serial``): percentages of the ring's host count, rounded down, at least 1; the
  last list element repeats; the final batch holds the remainder.
* b1 (SSM rate control): ``max_concurrency`` / ``max_errors`` as numbers or percentages;
  dispatching stops when errors exceed the threshold, in-flight hosts finish; concurrency ramps
  1, 2, 4 ... up to the cap.

DST: a cron time that does not exist (spring forward) starts at the same offset as just
before the gap, i.e. one hour later on the wall clock (02:30 → 03:30 in Europe/Berlin); an
ambiguous one (fall back) starts at its first occurrence. Durations are elapsed time.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from fnmatch import fnmatchcase
from typing import TypeVar
from zoneinfo import ZoneInfo

import structlog
from croniter import CroniterError, croniter  # type: ignore[import-untyped]

from patchpilot.core.errors import PatchpilotError
from patchpilot.core.models import Host
from patchpilot.core.schedule import (
    BlackoutPeriod,
    MaintenanceWindow,
    Ring,
    RingSpec,
    SchedulePolicy,
    WindowSlot,
    parse_count_or_percent,
    zone,
)

__all__ = [
    "RateControlError",
    "RateController",
    "assign_rings",
    "blackout_periods",
    "can_start",
    "next_window",
    "resolve_count",
    "waves",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: How far ahead :func:`next_window` looks for a usable slot.
HORIZON = timedelta(days=400)
_MAX_CRON_STEPS = 200_000


class RateControlError(PatchpilotError, RuntimeError):
    """The rate controller was used out of order (a programming error of the caller)."""


# --------------------------------------------------------------------------- windows


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now


def _localize(naive: datetime, tz: ZoneInfo) -> datetime:
    """A wall-clock time in ``tz`` as UTC; a time in a DST gap moves forward by the gap and an
    ambiguous one is its first occurrence (``fold=0``).

    Everything is compared in UTC: Python compares two datetimes with the *same* tzinfo by wall
    clock, ignoring ``fold``, which is wrong around a fall-back transition.
    """
    return naive.replace(tzinfo=tz).astimezone(UTC)


def blackout_periods(
    blackouts: Iterable[date | BlackoutPeriod], tz: ZoneInfo
) -> tuple[BlackoutPeriod, ...]:
    """Blackouts as periods in UTC, sorted; a date is the whole day in ``tz``.

    >>> from datetime import date
    >>> p = blackout_periods([date(2025, 12, 24)], ZoneInfo("Europe/Berlin"))[0]
    >>> p.start.isoformat(), p.end.isoformat()
    ('2025-12-23T23:00:00+00:00', '2025-12-24T23:00:00+00:00')
    """
    periods: list[BlackoutPeriod] = []
    for item in blackouts:
        if isinstance(item, BlackoutPeriod):
            periods.append(
                BlackoutPeriod(start=item.start.astimezone(UTC), end=item.end.astimezone(UTC))
            )
        else:
            start = _localize(datetime.combine(item, time()), tz)
            end = _localize(datetime.combine(item + timedelta(days=1), time()), tz)
            periods.append(BlackoutPeriod(start=start, end=end))
    return tuple(sorted(periods, key=lambda p: (p.start, p.end)))


def _first_free(
    moment: datetime, until: datetime | None, periods: Sequence[BlackoutPeriod]
) -> datetime | None:
    """The first time >= ``moment`` (and < ``until``) outside every blackout period."""
    moved = True
    while moved:
        moved = False
        for period in periods:
            if period.start <= moment < period.end:
                moment = period.end
                moved = True
    if until is not None and moment >= until:
        return None
    return moment


def _slot_for(
    window: MaintenanceWindow, blackouts: Sequence[date | BlackoutPeriod], now: datetime
) -> WindowSlot | None:
    tz = window.zone
    now = now.astimezone(UTC)
    periods = blackout_periods(blackouts, tz)
    local_now = now.astimezone(tz).replace(tzinfo=None)
    begin = local_now - window.duration - timedelta(hours=3)  # DST margin
    try:
        it = croniter(window.cron, begin)
        for _ in range(_MAX_CRON_STEPS):
            naive: datetime = it.get_next(datetime)
            if naive - local_now > HORIZON:
                return None
            start = _localize(naive, tz)
            end = start + window.duration
            last_start = end - window.cutoff
            if last_start <= now:
                continue
            if _first_free(max(start, now), last_start, periods) is None:
                continue
            overlapping = tuple(p for p in periods if p.start < last_start and p.end > start)
            return WindowSlot(
                window=window.name,
                start=start,
                end=end,
                last_start=last_start,
                timezone=window.timezone,
                blackouts=overlapping,
            )
    except CroniterError:  # an expression that never matches (e.g. 31 February)
        return None
    return None


def next_window(schedule: SchedulePolicy, now: datetime) -> WindowSlot | None:
    """The current or next window slot in which a host may still start.

    A slot qualifies when ``now < last_start`` and some time in ``[max(start, now),
    last_start)`` is outside every blackout. With no window (``always_open`` or an empty list)
    the slot starts at ``now`` (or when the current blackout ends) and never closes.

    Returns:
        The slot, or ``None`` when no window opens within :data:`HORIZON`.

    >>> from patchpilot.core.schedule import MaintenanceWindow
    >>> s = SchedulePolicy(windows=(MaintenanceWindow(name="w", cron="0 15 * * *",
    ...     duration="PT3H", cutoff="PT1H", timezone="UTC"),))
    >>> slot = next_window(s, datetime(2025, 6, 2, 12, 0, tzinfo=UTC))
    >>> slot.start.isoformat(), slot.last_start.isoformat()
    ('2025-06-02T15:00:00+00:00', '2025-06-02T17:00:00+00:00')
    """
    now = _aware(now).astimezone(UTC)
    if schedule.is_always_open:
        tz = zone(schedule.timezone)
        periods = blackout_periods(schedule.blackouts, tz)
        start = _first_free(now, None, periods)
        assert start is not None  # no upper bound
        return WindowSlot(
            window="always-open",
            start=start,
            end=None,
            last_start=None,
            timezone=schedule.timezone,
            blackouts=tuple(p for p in periods if p.end > now),
        )
    slots = [
        slot
        for window in schedule.windows
        if (slot := _slot_for(window, schedule.blackouts, now)) is not None
    ]
    if not slots:
        log.warning("schedule.no_window_opens", horizon_days=HORIZON.days)
        return None
    # The slot in which a host can start earliest; ties by window name.
    return min(
        slots,
        key=lambda s: (_first_free(max(s.start, now), s.last_start, s.blackouts), s.window),
    )


def can_start(now: datetime, slot: WindowSlot | None) -> bool:
    """Whether a new host may start at ``now`` in ``slot`` (SSM cutoff rule, blackouts).

    True iff ``start <= now < last_start`` (``last_start = start + duration - cutoff``) and
    ``now`` is in no blackout. Hosts already running may continue past ``last_start``.
    """
    now = _aware(now).astimezone(UTC)
    if slot is None or now < slot.start:
        return False
    if slot.last_start is not None and now >= slot.last_start:
        return False
    return not any(p.start <= now < p.end for p in slot.blackouts)


# --------------------------------------------------------------------------- rings and waves


def _selects(spec: RingSpec, host: Host) -> bool:
    return bool(spec.tags and host.tags & set(spec.tags)) or any(
        fnmatchcase(host.name, pattern) for pattern in spec.hosts
    )


def assign_rings(hosts: Sequence[Host], rings: Sequence[RingSpec]) -> list[Ring]:
    """Put every host in exactly one ring: the first ring selecting it, else the last ring.

    Hosts are ordered by name inside a ring, so the result does not depend on inventory order.
    Rings are resolved when the run starts (dynamic scope); the resolved set is logged.

    Example::

        canary = Host(name="c1", address="127.0.0.1", tags=frozenset({"canary"}))
        web = Host(name="w1", address="127.0.0.1")
        rings = assign_rings([web, canary], [RingSpec(name="canary", tags=("canary",)),
                                             RingSpec(name="broad")])
        # -> [Ring(name="canary", hosts=(canary,)), Ring(name="broad", hosts=(web,))]
    """
    if not rings:
        raise ValueError("at least one ring is needed")
    buckets: dict[str, list[Host]] = {spec.name: [] for spec in rings}
    seen: set[str] = set()
    for host in sorted(hosts, key=lambda h: h.name):
        if host.name in seen:
            raise ValueError(f"host {host.name!r} is listed twice")
        seen.add(host.name)
        spec = next((s for s in rings if _selects(s, host)), rings[-1])
        buckets[spec.name].append(host)
    result = [Ring(name=spec.name, hosts=tuple(buckets[spec.name])) for spec in rings]
    log.info(
        "schedule.rings.resolved",
        resolution="dynamic scopes re-resolved when the run starts",
        rings={r.name: [h.name for h in r.hosts] for r in result},
    )
    return result


def resolve_count(value: int | str, total: int, *, round_up: bool = False) -> int:
    """An absolute number, or a percentage of ``total`` rounded down (or up).

    Integer arithmetic, so ``"29%"`` of 100 is exactly 29.

    >>> resolve_count("10%", 50), resolve_count("10%", 5, round_up=True), resolve_count(3, 50)
    (5, 1, 3)
    """
    n, pct = parse_count_or_percent(value)
    if not pct:
        return n
    return -(-n * total // 100) if round_up else n * total // 100


def waves(hosts: Sequence[T], serial: int | str | Sequence[int | str]) -> list[list[T]]:
    """Split a ring's hosts into batches with Ansible ``serial`` semantics.

    A percentage is of ``len(hosts)``, rounded down, at least 1; with a list, the last element
    repeats until no host is left; the last batch holds the remainder.

    >>> [len(b) for b in waves(list(range(20)), "30%")]
    [6, 6, 6, 2]
    >>> [len(b) for b in waves(list(range(20)), [1, 5, "20%"])]
    [1, 5, 4, 4, 4, 2]
    """
    sizes: Sequence[int | str] = [serial] if isinstance(serial, int | str) else serial
    if not sizes:
        raise ValueError("serial cannot be empty")
    total = len(hosts)
    batches: list[list[T]] = []
    position = 0
    index = 0
    while position < total:
        size = max(1, resolve_count(sizes[index], total))
        batches.append(list(hosts[position : position + size]))
        position += size
        index = min(index + 1, len(sizes) - 1)
    return batches


# --------------------------------------------------------------------------- rate control


class RateController:
    """SSM rate control for one rollout of ``total`` targets; thread-safe.

    * concurrency cap: a number, or ``max(1, ceil(pct * total))``;
    * errors allowed: a number, or ``floor(pct * total)``; once failures exceed it nothing
      new is dispatched (``halted``), hosts in flight finish (and may fail too);
    * ramp: 1 in flight, and after each completion the ramp doubles up to the cap.

    Example::

        rc = RateController(3, max_concurrency=2, max_errors=0)
        rc.try_dispatch("a"), rc.try_dispatch("b")   # (True, False): the ramp starts at 1
        rc.finished("a", ok=False)                   # 1 error > 0 allowed
        rc.halted, rc.can_dispatch()                 # (True, False)
    """

    def __init__(self, total: int, max_concurrency: int | str, max_errors: int | str) -> None:
        if total < 0:
            raise ValueError("total cannot be negative")
        self.total = total
        self.concurrency_cap = max(1, resolve_count(max_concurrency, total, round_up=True))
        self.errors_allowed = resolve_count(max_errors, total)
        self._ramp = 1
        self._in_flight: set[Hashable] = set()
        self._done: set[Hashable] = set()
        self._dispatched = 0
        self._succeeded = 0
        self._failed = 0
        self._halt_reason: str | None = None
        self._cond = threading.Condition()

    # -- state
    @property
    def ramp(self) -> int:
        """The current in-flight limit: 1, 2, 4 ... up to the concurrency cap."""
        with self._cond:
            return self._ramp

    @property
    def in_flight(self) -> frozenset[Hashable]:
        """Hosts dispatched and not finished."""
        with self._cond:
            return frozenset(self._in_flight)

    @property
    def failed(self) -> int:
        """Failures so far."""
        with self._cond:
            return self._failed

    @property
    def succeeded(self) -> int:
        """Successes so far."""
        with self._cond:
            return self._succeeded

    @property
    def dispatched_count(self) -> int:
        """Hosts dispatched so far."""
        with self._cond:
            return self._dispatched

    @property
    def halted(self) -> bool:
        """True once the error threshold was exceeded (or :meth:`halt` was called)."""
        with self._cond:
            return self._halt_reason is not None

    @property
    def halt_reason(self) -> str | None:
        """Why dispatching stopped, or ``None``."""
        with self._cond:
            return self._halt_reason

    @property
    def done(self) -> bool:
        """Nothing in flight and nothing more will be dispatched."""
        with self._cond:
            return not self._in_flight and (
                self._halt_reason is not None or self._dispatched >= self.total
            )

    # -- transitions
    def _can_dispatch(self) -> bool:
        return (
            self._halt_reason is None
            and self._dispatched < self.total
            and len(self._in_flight) < min(self._ramp, self.concurrency_cap)
        )

    def can_dispatch(self) -> bool:
        """Whether one more host may start now (not halted, under the ramp, targets left)."""
        with self._cond:
            return self._can_dispatch()

    def dispatched(self, host: Hashable) -> None:
        """Record that ``host`` started.

        Raises:
            RateControlError: dispatching is not allowed now, or the host was already dispatched.
        """
        with self._cond:
            if host in self._in_flight or host in self._done:
                raise RateControlError(f"{host!r} was already dispatched")
            if not self._can_dispatch():
                raise RateControlError(f"cannot dispatch {host!r} now (check can_dispatch())")
            self._in_flight.add(host)
            self._dispatched += 1

    def try_dispatch(self, host: Hashable) -> bool:
        """Atomically check :meth:`can_dispatch` and record the dispatch; False if not allowed."""
        with self._cond:
            if not self._can_dispatch() or host in self._in_flight or host in self._done:
                return False
            self._in_flight.add(host)
            self._dispatched += 1
            return True

    def finished(self, host: Hashable, *, ok: bool) -> None:
        """Record that ``host`` finished; doubles the ramp; halts past the error threshold.

        Raises:
            RateControlError: ``host`` is not in flight.
        """
        with self._cond:
            if host not in self._in_flight:
                raise RateControlError(f"{host!r} is not in flight")
            self._in_flight.remove(host)
            self._done.add(host)
            if ok:
                self._succeeded += 1
            else:
                self._failed += 1
                if self._failed > self.errors_allowed and self._halt_reason is None:
                    self._halt_reason = (
                        f"error threshold exceeded: {self._failed} failed, "
                        f"{self.errors_allowed} allowed"
                    )
                    log.warning("schedule.rate_control_halted", reason=self._halt_reason)
            self._ramp = min(2 * self._ramp, self.concurrency_cap)
            self._cond.notify_all()

    def halt(self, reason: str) -> None:
        """Stop dispatching for another reason (window closed, health check failed...)."""
        with self._cond:
            if self._halt_reason is None:
                self._halt_reason = reason
                log.warning("schedule.rate_control_halted", reason=reason)
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a host may be dispatched or everything is done.

        Returns:
            True if dispatching is possible now, False when done/halted or on timeout.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    self._can_dispatch()
                    or (
                        not self._in_flight
                        and (self._halt_reason is not None or self._dispatched >= self.total)
                    )
                ),
                timeout=timeout,
            )
            return self._can_dispatch()

"""Windows from load history: collect each host's load, rank window slots by it.

**Collection** (:func:`collect_load`): a ``load`` schedule (``patchpilot schedules add --kind
load --cron '*/15 * * * *'``) makes the service's executor call this at each occurrence. It
reads each host's 1-minute load, busy CPU fraction, available memory and CPU pressure with the
host sampler of the post-patch analysis (:class:`~patchpilot.tools.metrics.host.HostProvider`:
one constant, read-only ``sh`` script over the host's transport; nothing is changed on the
host) and keeps one median per signal and host in the store
(:meth:`~patchpilot.core.store.load.LoadRepository.record_load_samples`). A host that cannot be
reached is reported, never retried in a loop: the next occurrence samples it again.

**Suggestion** (:func:`suggest_windows`, ``patchpilot schedules suggest``): for each group (a
ring of the policy, or the hosts with a tag), the slots the policy's maintenance windows allow
hosts to start in (an hour of the week, in the window's time zone; every hour of the week when
the policy has no window) are ranked by the median load1 of the group's samples taken in that
slot (ties: median CPU, then the earlier slot). Slots with fewer than ``min_samples`` samples
are listed last, as not enough evidence. The quietest slot with enough evidence is proposed,
with the evidence (samples, median) and the busiest allowed slot beside it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import structlog
from croniter import croniter  # type: ignore[import-untyped]
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from patchpilot.agents.scheduling import assign_rings
from patchpilot.core.errors import InvalidInputError, UnknownTargetError
from patchpilot.core.models import Host, utcnow
from patchpilot.core.policy import HostMetric, HostSignal, Policy
from patchpilot.core.schedule import MaintenanceWindow, zone
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store
from patchpilot.core.store.load import LoadSample
from patchpilot.tools.metrics.base import MetricProvider, MetricWindow

__all__ = [
    "DAYS",
    "LoadCollection",
    "SlotLoad",
    "WindowSuggestions",
    "allowed_slots",
    "collect_load",
    "rank_slots",
    "suggest_windows",
]

log = structlog.get_logger(__name__)

DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
"""Weekday names, Monday first (``datetime.weekday()`` order)."""

_SIGNALS: Final = (
    HostSignal.LOAD1,
    HostSignal.CPU,
    HostSignal.MEMORY_AVAILABLE,
    HostSignal.PSI_CPU,
)
_SPECS: Final = {s: HostMetric(name=f"load.{s.value}", signal=s) for s in _SIGNALS}
_REFERENCE_MONDAY: Final = datetime(2024, 1, 1)  # a Monday: one reference week of wall time
_MAX_WORKERS: Final = 16
_ALWAYS_OPEN: Final = "always-open"

Slot = tuple[int, int]
"""(weekday 0-6 Monday first, hour 0-23) in a window's time zone."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- collection


class LoadCollection(_Model):
    """What one collection stored: a sample per reachable host, and why the others gave none."""

    at: AwareDatetime
    samples: tuple[LoadSample, ...]
    stored: int = Field(description="samples new to the store")
    failed: dict[str, str] = Field(default_factory=dict, description="host -> why no sample")


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _sample_host(
    provider: MetricProvider,
    host: Host,
    window: MetricWindow,
    at: datetime,
    schedule_id: str | None,
) -> LoadSample | str:
    values: dict[HostSignal, float | None] = {}
    reason = "no load readings"
    for signal, spec in _SPECS.items():
        series = provider.collect(host, spec, window)
        values[signal] = _median(series.samples)
        if signal is HostSignal.LOAD1 and series.nodata_reason:
            reason = series.nodata_reason
    if values[HostSignal.LOAD1] is None and values[HostSignal.CPU] is None:
        return reason
    cpu = values[HostSignal.CPU]
    psi = values[HostSignal.PSI_CPU]
    return LoadSample(
        host=host.name,
        at=at,
        load1=values[HostSignal.LOAD1],
        cpu=min(max(cpu, 0.0), 1.0) if cpu is not None else None,
        memory_available=values[HostSignal.MEMORY_AVAILABLE],
        psi_cpu=min(max(psi, 0.0), 100.0) if psi is not None else None,
        schedule_id=schedule_id,
    )


def collect_load(
    settings: Settings,
    store: Store,
    hosts: Sequence[Host],
    *,
    schedule_id: str | None = None,
    at: datetime | None = None,
    provider: MetricProvider | None = None,
    interval_s: float = 1.0,
    count: int = 3,
) -> LoadCollection:
    """Sample each host's load once (``count`` reads ``interval_s`` apart; the medians are kept)
    and store one :class:`LoadSample` per host at ``at`` (default now).

    Read-only on the hosts. ``provider`` defaults to the host sampler over each host's
    transport (:func:`patchpilot.tools.transport.open_transport`); tests may pass another.
    """
    from patchpilot.tools.metrics import HostProvider
    from patchpilot.tools.transport import open_transport

    when = (at or utcnow()).replace(microsecond=0)
    window = MetricWindow(start=when, interval_s=interval_s, count=count)

    own: HostProvider | None = None
    sampler: MetricProvider
    if provider is None:
        sampler = own = HostProvider(lambda host: open_transport(host, settings))
    else:
        sampler = provider
    samples: list[LoadSample] = []
    failed: dict[str, str] = {}
    try:
        workers = max(1, min(_MAX_WORKERS, len(hosts)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load") as pool:
            futures = {
                host.name: pool.submit(_sample_host, sampler, host, window, when, schedule_id)
                for host in hosts
            }
            for name, future in sorted(futures.items()):
                try:
                    outcome = future.result()
                except Exception as exc:  # one host's failure never stops the others
                    outcome = f"{type(exc).__name__}: {exc}"[:300]
                if isinstance(outcome, str):
                    failed[name] = outcome
                else:
                    samples.append(outcome)
    finally:
        if own is not None:
            own.close()
    stored = store.record_load_samples(samples)
    log.info(
        "load.collected",
        schedule_id=schedule_id,
        at=when.isoformat(),
        hosts=len(hosts),
        samples=len(samples),
        stored=stored,
        failed=sorted(failed),
    )
    return LoadCollection(at=when, samples=tuple(samples), stored=stored, failed=failed)


# --------------------------------------------------------------------------- slots


def slot_name(slot: Slot) -> str:
    """``Tue 23:00``."""
    return f"{DAYS[slot[0]]} {slot[1]:02d}:00"


def slot_cron(slot: Slot) -> str:
    """A cron expression that fires at the start of ``slot`` every week (``0 23 * * 2``)."""
    return f"0 {slot[1]} * * {(slot[0] + 1) % 7}"


def allowed_slots(window: MaintenanceWindow) -> set[Slot]:
    """The hours of the week (in the window's zone) in which hosts may start: each occurrence
    of a reference week covers ``[start, start + duration - cutoff)`` (wall-clock time)."""
    startable = window.duration - window.cutoff
    end = _REFERENCE_MONDAY + timedelta(days=7)
    slots: set[Slot] = set()
    it = croniter(window.cron, _REFERENCE_MONDAY - timedelta(seconds=1))
    while True:
        start: datetime = it.get_next(datetime)
        if start >= end:
            break
        hour = start.replace(minute=0, second=0, microsecond=0)
        while hour < start + startable:  # an hour past the week wraps round to its start
            slots.add(((hour - _REFERENCE_MONDAY).days % 7, hour.hour))
            hour += timedelta(hours=1)
    return slots


class SlotLoad(_Model):
    """The observed load of one hour-of-week slot."""

    slot: str = Field(description="'Tue 23:00' (the window's time zone)")
    weekday: int = Field(ge=0, le=6, description="0 Monday ... 6 Sunday")
    hour: int = Field(ge=0, le=23)
    samples: int
    median_load: float | None
    median_cpu: float | None
    enough: bool = Field(description="at least min_samples samples")


def _slot_of(moment: datetime, tz: ZoneInfo) -> Slot:
    local = moment.astimezone(tz)
    return (local.weekday(), local.hour)


def rank_slots(
    slots: Iterable[Slot], samples: Iterable[LoadSample], tz: ZoneInfo, *, min_samples: int = 3
) -> list[SlotLoad]:
    """``slots`` ranked quietest first by the median load1 of ``samples`` taken in them (ties:
    median CPU, then the earlier slot); slots with fewer than ``min_samples`` samples last."""
    wanted = set(slots)
    loads: dict[Slot, list[float]] = defaultdict(list)
    cpus: dict[Slot, list[float]] = defaultdict(list)
    counts: dict[Slot, int] = defaultdict(int)
    for sample in samples:
        slot = _slot_of(sample.at, tz)
        if slot not in wanted or sample.load1 is None:
            continue
        counts[slot] += 1
        loads[slot].append(sample.load1)
        if sample.cpu is not None:
            cpus[slot].append(sample.cpu)
    ranked = [
        SlotLoad(
            slot=slot_name(slot),
            weekday=slot[0],
            hour=slot[1],
            samples=counts[slot],
            median_load=_round(_median(loads[slot])),
            median_cpu=_round(_median(cpus[slot])),
            enough=counts[slot] >= min_samples,
        )
        for slot in wanted
    ]

    def key(s: SlotLoad) -> tuple[int, float, float, int, int]:
        return (
            0 if s.enough else 1,
            s.median_load if s.median_load is not None else float("inf"),
            s.median_cpu if s.median_cpu is not None else float("inf"),
            s.weekday,
            s.hour,
        )

    return sorted(ranked, key=key)


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


# --------------------------------------------------------------------------- suggestions


class WindowRanking(_Model):
    """One maintenance window's allowed slots, ranked by observed load."""

    window: str
    timezone: str
    slots: tuple[SlotLoad, ...]

    @property
    def quietest(self) -> SlotLoad | None:
        """The quietest slot with enough samples."""
        return next((s for s in self.slots if s.enough), None)


class Suggestion(_Model):
    """The proposed slot of one group, with its evidence."""

    window: str
    timezone: str
    slot: str
    cron: str = Field(description="a weekly cron that starts at the slot (in timezone)")
    samples: int
    median_load: float | None
    median_cpu: float | None
    busiest: str | None = Field(description="the busiest allowed slot with enough samples")
    busiest_median_load: float | None


class GroupSuggestion(_Model):
    """The ranking and the proposal of one group."""

    group: str
    kind: Literal["ring", "tag"]
    hosts: tuple[str, ...]
    samples: int = Field(description="load samples of the group's hosts considered")
    windows: tuple[WindowRanking, ...]
    suggestion: Suggestion | None
    text: str = Field(description="the proposal (or why there is none) in plain words")


class WindowSuggestions(_Model):
    """``patchpilot schedules suggest``: ``patchpilot.window-suggestions/v1``."""

    schema_: str = Field(default="patchpilot.window-suggestions/v1", alias="schema")
    generated_at: AwareDatetime
    since: AwareDatetime | None
    min_samples: int
    groups: tuple[GroupSuggestion, ...]

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def document(self) -> dict[str, Any]:
        """The JSON form."""
        return self.model_dump(mode="json", by_alias=True)


def _groups(
    policy: Policy, hosts: Sequence[Host], group: str | None
) -> list[tuple[str, Literal["ring", "tag"], list[Host]]]:
    rings = assign_rings(hosts, policy.schedule.rings)
    if group is None:
        return [(r.name, "ring", list(r.hosts)) for r in rings]
    for ring in rings:
        if ring.name == group:
            return [(ring.name, "ring", list(ring.hosts))]
    tagged = [h for h in hosts if group in h.tags]
    if not tagged:
        raise UnknownTargetError(
            f"{group!r} is neither a ring of the policy nor a tag of an inventory host",
            key="group",
        )
    return [(group, "tag", tagged)]


def _windows(policy: Policy) -> list[tuple[str, str, set[Slot]]]:
    schedule = policy.schedule
    if schedule.is_always_open:
        every = {(d, h) for d in range(7) for h in range(24)}
        return [(_ALWAYS_OPEN, schedule.timezone, every)]
    return [(w.name, w.timezone, allowed_slots(w)) for w in schedule.windows]


def _suggest(
    name: str, kind: Literal["ring", "tag"], hosts: list[Host], windows: list[WindowRanking]
) -> tuple[Suggestion | None, str]:
    label = f"{kind} {name}"
    if not hosts:
        return None, f"{label}: no host in this group"
    best: tuple[WindowRanking, SlotLoad] | None = None
    for ranking in windows:
        quiet = ranking.quietest
        if quiet is None or quiet.median_load is None:
            continue
        if best is None or quiet.median_load < (best[1].median_load or 0.0):
            best = (ranking, quiet)
    if best is None:
        return None, (
            f"{label}: not enough load history in the allowed windows yet (add a `load` "
            "schedule: patchpilot schedules add --kind load --cron '*/15 * * * *')"
        )
    ranking, quiet = best
    busy = [s for s in ranking.slots if s.enough and s.median_load is not None]
    busiest = max(busy, key=lambda s: (s.median_load or 0.0, -s.weekday, -s.hour))
    suggestion = Suggestion(
        window=ranking.window,
        timezone=ranking.timezone,
        slot=quiet.slot,
        cron=slot_cron((quiet.weekday, quiet.hour)),
        samples=quiet.samples,
        median_load=quiet.median_load,
        median_cpu=quiet.median_cpu,
        busiest=busiest.slot if busiest is not quiet else None,
        busiest_median_load=busiest.median_load if busiest is not quiet else None,
    )
    text = (
        f"{label}: start in window {ranking.window} at {quiet.slot} ({ranking.timezone}): "
        f"median load {quiet.median_load:g} over {quiet.samples} samples"
    )
    if suggestion.busiest is not None:
        text += f"; the busiest allowed slot is {busiest.slot} (median {busiest.median_load:g})"
    return suggestion, text


def suggest_windows(
    store: Store,
    policy: Policy,
    hosts: Sequence[Host],
    *,
    group: str | None = None,
    since: datetime | None = None,
    min_samples: int = 3,
    now: datetime | None = None,
) -> WindowSuggestions:
    """Rank each group's allowed window slots by observed load and propose the quietest.

    Args:
        store: Where the load history is.
        policy: Its rings and maintenance windows.
        hosts: The inventory's hosts.
        group: A ring of the policy or a host tag (default: every ring).
        since: Only samples taken at or after this (default: all).
        min_samples: Fewer samples in a slot are not enough evidence.
        now: The report's time.

    Raises:
        UnknownTargetError: ``group`` is neither a ring nor a tag.
        InvalidInputError: ``min_samples`` below 1.
    """
    if min_samples < 1:
        raise InvalidInputError("min_samples", "must be at least 1")
    windows = _windows(policy)
    out: list[GroupSuggestion] = []
    for name, kind, members in _groups(policy, hosts, group):
        names = sorted(h.name for h in members)
        samples = store.load_samples(hosts=names, since=since) if names else []
        rankings = [
            WindowRanking(
                window=w_name,
                timezone=tz_name,
                slots=tuple(rank_slots(slots, samples, zone(tz_name), min_samples=min_samples)),
            )
            for w_name, tz_name, slots in windows
        ]
        suggestion, text = _suggest(name, kind, members, rankings)
        out.append(
            GroupSuggestion(
                group=name,
                kind=kind,
                hosts=tuple(names),
                samples=len(samples),
                windows=tuple(rankings),
                suggestion=suggestion,
                text=text,
            )
        )
    return WindowSuggestions(
        generated_at=now or utcnow(), since=since, min_samples=min_samples, groups=tuple(out)
    )

"""Scheduling: windows (SSM cutoff, DST, blackouts), rings, Ansible waves, SSM rate control."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpilot.agents.scheduling import (
    RateControlError,
    RateController,
    assign_rings,
    can_start,
    next_window,
    waves,
)
from patchpilot.core.models import Host
from patchpilot.core.schedule import BlackoutPeriod, MaintenanceWindow, RingSpec, SchedulePolicy

BERLIN = ZoneInfo("Europe/Berlin")


def _schedule(**window: object) -> SchedulePolicy:
    spec = {"name": "w", "cron": "0 15 * * *", "duration": "PT3H", "cutoff": "PT1H"}
    spec.update(window)
    return SchedulePolicy.model_validate({"windows": [spec]})


# --------------------------------------------------------------------------- windows


def test_cutoff_nothing_starts_after_17_local() -> None:
    s = _schedule(timezone="Europe/Berlin")
    now = datetime(2025, 6, 2, 12, 0, tzinfo=BERLIN)
    slot = next_window(s, now)
    assert slot is not None
    assert slot.start == datetime(2025, 6, 2, 15, 0, tzinfo=BERLIN)
    assert slot.end == datetime(2025, 6, 2, 18, 0, tzinfo=BERLIN)
    assert slot.last_start == datetime(2025, 6, 2, 17, 0, tzinfo=BERLIN)
    assert not can_start(now, slot)
    assert can_start(datetime(2025, 6, 2, 15, 0, tzinfo=BERLIN), slot)
    assert can_start(datetime(2025, 6, 2, 16, 59, 59, tzinfo=BERLIN), slot)
    assert not can_start(datetime(2025, 6, 2, 17, 0, tzinfo=BERLIN), slot)
    assert not can_start(datetime(2025, 6, 2, 17, 30, tzinfo=BERLIN), slot)


def test_open_window_is_returned_until_cutoff_then_next_day() -> None:
    s = _schedule(timezone="Europe/Berlin")
    inside = next_window(s, datetime(2025, 6, 2, 16, 0, tzinfo=BERLIN))
    assert inside is not None
    assert inside.start.day == 2
    after_cutoff = next_window(s, datetime(2025, 6, 2, 17, 0, tzinfo=BERLIN))
    assert after_cutoff is not None
    assert after_cutoff.start == datetime(2025, 6, 3, 15, 0, tzinfo=BERLIN)


def test_window_in_utc_from_other_zone_now() -> None:
    s = _schedule(timezone="America/New_York")
    slot = next_window(s, datetime(2025, 1, 15, 12, 0, tzinfo=UTC))  # 07:00 in New York
    assert slot is not None
    assert slot.start.astimezone(UTC) == datetime(2025, 1, 15, 20, 0, tzinfo=UTC)


def test_dst_spring_forward_gap_start_moves_forward() -> None:
    # 2025-03-30 02:30 does not exist in Berlin (02:00 -> 03:00).
    s = _schedule(cron="30 2 * * *", duration="PT2H", cutoff="PT30M", timezone="Europe/Berlin")
    slot = next_window(s, datetime(2025, 3, 30, 0, 0, tzinfo=BERLIN))
    assert slot is not None
    assert slot.start.astimezone(UTC) == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)  # 03:30 CEST
    assert slot.end is not None
    assert slot.end - slot.start == timedelta(hours=2)
    assert slot.end.astimezone(UTC) - slot.start.astimezone(UTC) == timedelta(hours=2)


def test_dst_duration_is_elapsed_time_across_fall_back() -> None:
    # 2025-10-26: clocks go 03:00 CEST -> 02:00 CET. A 01:00 + 3 h window ends 03:00 CET.
    s = _schedule(cron="0 1 * * *", duration="PT3H", cutoff="PT1H", timezone="Europe/Berlin")
    slot = next_window(s, datetime(2025, 10, 26, 0, 0, tzinfo=BERLIN))
    assert slot is not None
    assert slot.end is not None
    assert slot.last_start is not None
    assert slot.end.astimezone(UTC) == datetime(2025, 10, 26, 2, 0, tzinfo=UTC)
    assert slot.end.astimezone(BERLIN).hour == 3
    assert slot.last_start.astimezone(UTC) == datetime(2025, 10, 26, 1, 0, tzinfo=UTC)


def test_dst_ambiguous_start_runs_once_first_occurrence() -> None:
    s = _schedule(cron="30 2 * * *", duration="PT1H", cutoff=0, timezone="Europe/Berlin")
    slot = next_window(s, datetime(2025, 10, 26, 0, 0, tzinfo=BERLIN))
    assert slot is not None
    assert slot.start.astimezone(UTC) == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)  # CEST
    later = next_window(s, slot.start + timedelta(hours=1, minutes=1))
    assert later is not None
    assert later.start.date() == date(2025, 10, 27)


def test_blackout_date_skips_the_whole_day_in_window_zone() -> None:
    s = SchedulePolicy.model_validate(
        {
            "windows": [
                {
                    "name": "w",
                    "cron": "0 15 * * *",
                    "duration": "PT3H",
                    "cutoff": "PT1H",
                    "timezone": "Europe/Berlin",
                }
            ],
            "blackouts": [date(2025, 12, 24)],
        }
    )
    slot = next_window(s, datetime(2025, 12, 24, 9, 0, tzinfo=BERLIN))
    assert slot is not None
    assert slot.start == datetime(2025, 12, 25, 15, 0, tzinfo=BERLIN)


def test_blackout_period_blocks_part_of_a_window() -> None:
    s = SchedulePolicy.model_validate(
        {
            "windows": [
                {
                    "name": "w",
                    "cron": "0 15 * * *",
                    "duration": "PT3H",
                    "cutoff": "PT1H",
                    "timezone": "UTC",
                }
            ],
            "blackouts": [{"start": "2025-06-02T14:00:00+00:00", "end": "2025-06-02T16:00:00Z"}],
        }
    )
    slot = next_window(s, datetime(2025, 6, 2, 10, 0, tzinfo=UTC))
    assert slot is not None
    assert slot.start == datetime(2025, 6, 2, 15, 0, tzinfo=UTC)
    assert not can_start(datetime(2025, 6, 2, 15, 30, tzinfo=UTC), slot)
    assert can_start(datetime(2025, 6, 2, 16, 0, tzinfo=UTC), slot)


def test_always_open_window_and_blackout() -> None:
    s = SchedulePolicy.model_validate(
        {"always_open": True, "blackouts": ["2025-06-02"], "timezone": "UTC"}
    )
    now = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)
    slot = next_window(s, now)
    assert slot is not None
    assert slot.end is None
    assert slot.start == datetime(2025, 6, 3, 0, 0, tzinfo=UTC)
    assert not can_start(now, slot)
    assert can_start(datetime(2025, 6, 10, tzinfo=UTC), slot)
    assert can_start(now, next_window(SchedulePolicy(), now))


def test_never_matching_cron_gives_none_and_naive_now_refused() -> None:
    s = _schedule(cron="0 0 31 2 *")
    assert next_window(s, datetime(2025, 1, 1, tzinfo=UTC)) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        next_window(s, datetime(2025, 1, 1))


# --------------------------------------------------------------------------- rings and waves


def _hosts(n: int, tags: frozenset[str] = frozenset()) -> list[Host]:
    return [Host(name=f"h{i:03d}", address="127.0.0.1", tags=tags) for i in range(n)]


def test_rings_first_match_and_rest_to_last_ring() -> None:
    canary = Host(
        name="canary-1", address="127.0.0.1", tags=frozenset({"web", "staging", "canary"})
    )
    web = Host(name="web-1", address="127.0.0.1", tags=frozenset({"web", "prod"}))
    db = Host(name="db-1", address="127.0.0.1", tags=frozenset({"db", "prod"}))
    stage = Host(name="staging-1", address="127.0.0.1", tags=frozenset({"staging"}))
    specs = [
        RingSpec(name="canary", tags=("canary",)),
        RingSpec(name="early", tags=("staging",), hosts=("db-*",)),
        RingSpec(name="broad", tags=("nothing",)),
    ]
    rings = assign_rings([web, db, stage, canary], specs)
    assert [(r.name, [h.name for h in r.hosts]) for r in rings] == [
        ("canary", ["canary-1"]),
        ("early", ["db-1", "staging-1"]),
        ("broad", ["web-1"]),
    ]
    with pytest.raises(ValueError, match="twice"):
        assign_rings([web, web], specs)


@settings(deadline=None, max_examples=50)
@given(st.lists(st.sets(st.sampled_from(["a", "b", "c"])), max_size=20))
def test_rings_every_host_exactly_once(tag_sets: list[set[str]]) -> None:
    hosts = [
        Host(name=f"h{i}", address="127.0.0.1", tags=frozenset(t)) for i, t in enumerate(tag_sets)
    ]
    specs = [RingSpec(name="a", tags=("a",)), RingSpec(name="b", tags=("b",)), RingSpec(name="z")]
    rings = assign_rings(hosts, specs)
    names = [h.name for r in rings for h in r.hosts]
    assert sorted(names) == sorted(h.name for h in hosts)
    assert rings == assign_rings(list(reversed(hosts)), specs)


@pytest.mark.parametrize(
    ("n", "serial", "sizes"),
    [
        (20, "30%", [6, 6, 6, 2]),
        (20, [1, 5, "20%"], [1, 5, 4, 4, 4, 2]),
        (3, [1, "50%"], [1, 1, 1]),
        (10, [1, "50%"], [1, 5, 4]),
        (5, 2, [2, 2, 1]),
        (3, "10%", [1, 1, 1]),
        (100, "29%", [29, 29, 29, 13]),
        (4, "100%", [4]),
        (0, [1, 5], []),
    ],
)
def test_waves_ansible_serial(
    n: int, serial: int | str | list[int | str], sizes: list[int]
) -> None:
    assert [len(b) for b in waves(list(range(n)), serial)] == sizes


@settings(deadline=None, max_examples=50)
@given(
    st.lists(st.integers(), max_size=60),
    st.lists(
        st.one_of(st.integers(1, 10), st.integers(1, 100).map(lambda p: f"{p}%")),
        min_size=1,
        max_size=4,
    ),
)
def test_waves_partition_in_order(hosts: list[int], serial: list[int | str]) -> None:
    batches = waves(hosts, serial)
    assert [h for b in batches for h in b] == hosts
    assert all(batches)


# --------------------------------------------------------------------------- rate control


def _run_serially(rc: RateController, outcomes: list[bool]) -> int:
    """Dispatch one at a time; returns how many hosts were started."""
    started = 0
    for i, ok in enumerate(outcomes):
        if not rc.try_dispatch(i):
            break
        started += 1
        rc.finished(i, ok=ok)
    return started


def test_max_errors_zero_stops_after_first_error() -> None:
    rc = RateController(10, max_concurrency=1, max_errors=0)
    assert _run_serially(rc, [True, False, True, True]) == 2
    assert rc.halted
    assert rc.halt_reason is not None
    assert "1 failed, 0 allowed" in rc.halt_reason
    assert not rc.can_dispatch()
    assert rc.done


def test_max_errors_three_stops_at_fourth() -> None:
    rc = RateController(10, max_concurrency=1, max_errors=3)
    assert _run_serially(rc, [False] * 10) == 4
    assert rc.failed == 4


def test_max_errors_ten_percent_of_50_stops_at_sixth() -> None:
    rc = RateController(50, max_concurrency=1, max_errors="10%")
    assert rc.errors_allowed == 5
    assert _run_serially(rc, [False] * 50) == 6


def test_concurrency_percent_rounds_up_min_one() -> None:
    assert RateController(50, "10%", 0).concurrency_cap == 5
    assert RateController(5, "10%", 0).concurrency_cap == 1
    assert RateController(15, "10%", 0).concurrency_cap == 2
    assert RateController(15, "10%", "10%").errors_allowed == 1


def test_in_flight_hosts_finish_after_halt() -> None:
    rc = RateController(10, max_concurrency=4, max_errors=0)
    assert rc.try_dispatch("a")
    rc.finished("a", ok=True)
    assert rc.try_dispatch("b")
    assert rc.try_dispatch("c")
    assert not rc.try_dispatch("d")  # ramp is 2
    rc.finished("b", ok=False)
    assert rc.halted
    assert not rc.done
    rc.finished("c", ok=False)  # in-flight host may fail too
    assert rc.done
    assert rc.failed == 2
    with pytest.raises(RateControlError):
        rc.dispatched("e")
    with pytest.raises(RateControlError):
        rc.finished("zzz", ok=True)


def test_ramp_doubles_to_cap() -> None:
    rc = RateController(100, max_concurrency=5, max_errors=0)
    levels = []
    for i in range(6):
        levels.append(rc.ramp)
        assert rc.try_dispatch(i)
        rc.finished(i, ok=True)
    assert levels == [1, 2, 4, 5, 5, 5]


@settings(deadline=None, max_examples=50)
@given(
    st.integers(1, 40),
    st.one_of(st.integers(1, 8), st.integers(1, 100).map(lambda p: f"{p}%")),
    st.lists(st.tuples(st.booleans(), st.booleans()), max_size=120),
)
def test_ramp_never_exceeds_cap(
    total: int, cap: int | str, script: list[tuple[bool, bool]]
) -> None:
    rc = RateController(total, cap, max_errors=total)
    flying: list[int] = []
    next_host = 0
    for start, ok in script:
        if start and rc.try_dispatch(next_host):
            flying.append(next_host)
            next_host += 1
        elif flying:
            rc.finished(flying.pop(0), ok=ok)
        assert len(rc.in_flight) <= min(rc.ramp, rc.concurrency_cap)
        assert rc.ramp <= rc.concurrency_cap
    assert rc.dispatched_count <= total


def test_thread_safe_dispatch() -> None:
    rc = RateController(200, max_concurrency=8, max_errors=200)
    peak = [0]
    lock = threading.Lock()
    counter = iter(range(10_000))

    def worker() -> None:
        while True:
            if not rc.wait(timeout=5):
                return
            host = next(counter)
            if not rc.try_dispatch(host):
                continue
            with lock:
                peak[0] = max(peak[0], len(rc.in_flight))
            rc.finished(host, ok=host % 7 != 0)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert rc.done
    assert rc.dispatched_count == 200
    assert peak[0] <= 8


def test_blackout_period_model_validates_order() -> None:
    with pytest.raises(ValueError, match="after its start"):
        BlackoutPeriod(start=datetime(2025, 1, 2, tzinfo=UTC), end=datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="cutoff must be shorter"):
        MaintenanceWindow(name="w", cron="0 1 * * *", duration="PT1H", cutoff="PT1H")

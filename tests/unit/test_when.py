"""Reading "now", "tonight", "at 22:00", "on Saturday"... into a not-before time (a fixed clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from patchpilot.agents.intake.when import (
    WhenReading,
    format_local,
    parse_not_before,
    policy_timezone,
    read_when,
)
from patchpilot.core.errors import InvalidInputError
from patchpilot.core.intents import When
from patchpilot.core.schedule import MaintenanceWindow, SchedulePolicy

BERLIN = ZoneInfo("Europe/Berlin")
# Monday 2026-12-07, 11:00 in Berlin (10:00 UTC)
MONDAY = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def read(text: str, now: datetime = MONDAY, tz: str = "Europe/Berlin") -> WhenReading:
    return read_when(text, now=now, timezone=tz)


def local(reading: WhenReading) -> str | None:
    if reading.not_before is None:
        return None
    assert reading.not_before.utcoffset() is not None
    return f"{reading.not_before.astimezone(BERLIN):%a %Y-%m-%d %H:%M}"


@pytest.mark.parametrize(
    ("text", "when", "at"),
    [
        ("upgrade acme-web to 1.1.0 on web-1 tonight", When.TONIGHT, "Mon 2026-12-07 20:00"),
        ("patch web-1 this evening", When.TONIGHT, "Mon 2026-12-07 20:00"),
        ("tonight at 11", When.TONIGHT, "Mon 2026-12-07 23:00"),
        ("at 10pm tonight", When.TONIGHT, "Mon 2026-12-07 22:00"),
        ("tonight at 2", When.TONIGHT, "Tue 2026-12-08 02:00"),
        ("patch db-1 at 22:00", When.SCHEDULED, "Mon 2026-12-07 22:00"),
        ("at 10pm", When.SCHEDULED, "Mon 2026-12-07 22:00"),
        ("at 10:30 p.m.", When.SCHEDULED, "Mon 2026-12-07 22:30"),
        ("at 22h", When.SCHEDULED, "Mon 2026-12-07 22:00"),
        ("at 10:30", When.SCHEDULED, "Tue 2026-12-08 10:30"),  # 10:30 has passed today
        ("at noon", When.SCHEDULED, "Mon 2026-12-07 12:00"),
        ("at midnight", When.SCHEDULED, "Tue 2026-12-08 00:00"),
        ("after 22:00", When.SCHEDULED, "Mon 2026-12-07 22:00"),
        ("tomorrow morning", When.SCHEDULED, "Tue 2026-12-08 08:00"),
        ("tomorrow at 9am", When.SCHEDULED, "Tue 2026-12-08 09:00"),
        ("tomorrow", When.SCHEDULED, "Tue 2026-12-08 00:00"),
        ("this afternoon", When.SCHEDULED, "Mon 2026-12-07 14:00"),
        ("at 3 in the afternoon", When.SCHEDULED, "Mon 2026-12-07 15:00"),
        ("on Saturday", When.SCHEDULED, "Sat 2026-12-12 00:00"),
        ("saturday night", When.SCHEDULED, "Sat 2026-12-12 20:00"),
        ("on sat at 9am", When.SCHEDULED, "Sat 2026-12-12 09:00"),
        ("on Monday at 08:00", When.SCHEDULED, "Mon 2026-12-14 08:00"),  # today's has passed
        ("this weekend", When.SCHEDULED, "Sat 2026-12-12 00:00"),
        ("in 2 hours", When.SCHEDULED, "Mon 2026-12-07 13:00"),
        ("in half an hour", When.SCHEDULED, "Mon 2026-12-07 11:30"),
        ("in 2h", When.SCHEDULED, "Mon 2026-12-07 13:00"),
        ("2026-12-24 22:00", When.SCHEDULED, "Thu 2026-12-24 22:00"),
        ("2026-12-24T22:00+00:00", When.SCHEDULED, "Thu 2026-12-24 23:00"),
        ("on Saturday in the next maintenance window", When.SCHEDULED, "Sat 2026-12-12 00:00"),
        ("now", When.NOW, None),
        ("right away please", When.NOW, None),
        ("asap", When.NOW, None),
        ("as soon as possible", When.NOW, None),
        ("in the next maintenance window", When.NEXT_WINDOW, None),
        ("during the patch window", When.NEXT_WINDOW, None),
    ],
)
def test_understood_times(text: str, when: When, at: str | None) -> None:
    reading = read(text)
    assert reading.clarification is None, reading.clarification
    assert reading.when is when
    assert local(reading) == at
    if reading.not_before is not None:
        assert reading.not_before.tzinfo is not None
        assert reading.not_before.utcoffset() == UTC.utcoffset(None)


@pytest.mark.parametrize(
    ("text", "asked"),
    [
        ("later", "'later' is not a time"),
        ("soon", "'soon' is not a time"),
        ("sometime this week", "'sometime' is not a time"),
        ("next week", "'next week' is not a time"),
        ("next saturday", "'next saturday' is not a time"),
        ("saturdays", "'saturdays' is not a time"),
        ("after hours", "'after hours' is not a time"),
        ("at 25:00", "25:00 is not a time of day"),
        ("at 13pm", "13pm is not a time of day"),
        ("at 3", "'at 3' in the morning (03:00) or the evening (15:00)?"),
        ("by 22:00", "'by 22:00' is a deadline"),
        ("tonight or on saturday", "two times given (tonight, on saturday)"),
        ("now, or tonight", "now or tonight"),
        ("today", "today: now, this afternoon, tonight or at a time?"),
        ("today at 08:00", "Mon 2026-12-07 08:00 Europe/Berlin has passed"),
        ("2026-01-01", "has passed"),
        ("in 30 days", "more than 14 days ahead"),
    ],
)
def test_unclear_times_are_asked_back(text: str, asked: str) -> None:
    reading = read(text)
    assert reading.clarification is not None
    assert asked in reading.clarification
    assert reading.when is When.UNSPECIFIED
    assert reading.not_before is None


@pytest.mark.parametrize(
    "text",
    [
        "patch acme-web on web-1",
        "pin acme-web at 1.1.0 on web-1",  # a version is not a time
        "upgrade openssl to 1:3.0.15-1 on db-1",  # nor an epoch
        "patch CVE-2024-6387 on web-1",
        "approve 20261127T101941Z-31b1dc",
        "patch 3 hosts in 2 groups",
        "good morning, what is pending on db-1?",
    ],
)
def test_no_time_words_is_unspecified(text: str) -> None:
    assert read(text) == WhenReading()


def test_tonight_after_its_hour_does_not_wait() -> None:
    late = datetime(2026, 12, 7, 21, 30, tzinfo=UTC)  # 22:30 in Berlin
    reading = read("tonight", now=late)
    assert reading.when is When.TONIGHT
    assert reading.not_before is not None
    assert reading.not_before <= late  # already tonight: no wait


def test_on_the_day_named_today_means_today() -> None:
    saturday = datetime(2026, 12, 12, 9, 0, tzinfo=UTC)
    assert local(read("on Saturday", now=saturday)) == "Sat 2026-12-12 00:00"
    assert local(read("this weekend", now=saturday)) == "Sat 2026-12-12 00:00"
    assert local(read("on saturday at 22:00", now=saturday)) == "Sat 2026-12-12 22:00"


def test_times_are_wall_clock_in_the_policy_time_zone_across_dst() -> None:
    # Saturday 2027-03-27; Europe/Berlin moves from +01:00 to +02:00 on Sunday 02:00
    before = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)
    sunday = read("tomorrow at 22:00", now=before)
    assert sunday.not_before == datetime(2027, 3, 28, 20, 0, tzinfo=UTC)  # +02:00
    saturday = read("at 22:00", now=before)
    assert saturday.not_before == datetime(2027, 3, 27, 21, 0, tzinfo=UTC)  # +01:00
    # 02:30 does not exist that night: read as the same time after the change (03:30 +02:00)
    skipped = read("tomorrow at 02:30", now=before)
    assert skipped.not_before == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)
    assert local(skipped) == "Sun 2027-03-28 03:30"
    # the same words in UTC
    assert read("at 22:00", now=before, tz="UTC").not_before == datetime(
        2027, 3, 27, 22, 0, tzinfo=UTC
    )


def test_policy_timezone() -> None:
    window = MaintenanceWindow(
        name="w", cron="0 22 * * *", duration="PT2H", timezone="America/New_York"
    )
    assert policy_timezone(SchedulePolicy()) == "UTC"
    assert policy_timezone(SchedulePolicy(windows=(window,))) == "America/New_York"
    assert policy_timezone(SchedulePolicy(timezone="Europe/Berlin")) == "Europe/Berlin"
    both = SchedulePolicy(windows=(window,), timezone="Europe/Berlin")
    assert policy_timezone(both) == "America/New_York"  # the windows' zone


def test_parse_not_before() -> None:
    assert parse_not_before("22:00", now=MONDAY, timezone="Europe/Berlin") == datetime(
        2026, 12, 7, 21, 0, tzinfo=UTC
    )
    assert parse_not_before("09:00", now=MONDAY, timezone="Europe/Berlin") == datetime(
        2026, 12, 8, 8, 0, tzinfo=UTC
    )
    assert parse_not_before("2026-12-24T22:00", now=MONDAY, timezone="Europe/Berlin") == (
        datetime(2026, 12, 24, 21, 0, tzinfo=UTC)
    )
    assert parse_not_before("2026-12-24T22:00+00:00", now=MONDAY, timezone="Europe/Berlin") == (
        datetime(2026, 12, 24, 22, 0, tzinfo=UTC)
    )
    assert parse_not_before("2026-12-24", now=MONDAY) == datetime(2026, 12, 24, tzinfo=UTC)
    for bad, why in [
        ("25:00", "not a time of day"),
        ("tonight", "is not a time"),
        ("2026-12-01T10:00", "has passed"),
        ("x" * 50, "too long"),
    ]:
        with pytest.raises(InvalidInputError, match=why):
            parse_not_before(bad, now=MONDAY)


def test_format_local() -> None:
    assert format_local(MONDAY, "Europe/Berlin") == "Mon 2026-12-07 11:00 Europe/Berlin"


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        read_when("tonight", now=datetime(2026, 12, 7, 10, 0))

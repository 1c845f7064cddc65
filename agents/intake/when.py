"""When a change should start: "now", "tonight", "at 22:00", "on Saturday" as a not-before time.

:func:`read_when` is a pure function (the clock and the time zone are arguments): it finds the
time words of one message and returns a :class:`WhenReading`: the
:class:`~patchpilot.core.intents.When`, the ``not_before`` time (UTC) and, when the words are
unclear, a question to ask back instead.
The grammar (:mod:`patchpilot.agents.intake.parser`) and the LLM path call it with the person's
own words; :func:`parse_not_before` reads ``patchpilot run --not-before``. A run with a
``not_before`` time starts deploying at ``max(not_before, the next maintenance window opening)``
(:mod:`patchpilot.graphs.run`): the time never widens the policy's windows, blackouts or cutoff.

Times are wall-clock times in the policy's time zone (:func:`policy_timezone`), converted with
:mod:`zoneinfo` (exact across DST changes; a wall time skipped by a spring-forward change is read
as the same time after the change, e.g. 02:30 -> 03:30).

Phrases read (case-insensitive, anywhere in the message):

==============================================  ==================================================
``now``, ``right now``, ``right away``,         ``now``, no wait (the window rule still applies)
``immediately``, ``asap``, ``as soon as
possible``, ``at once``
``in the next maintenance window``,             ``next_window``, no not-before time: the window
``next window``, ``maintenance/patch/change     rule alone (today's behaviour)
window``
``tonight``, ``tonite``, ``this evening``,      ``tonight``, today at 20:00
``overnight``, ``this night``
``tonight at 11``, ``at 10pm tonight``          ``tonight``, that hour in the evening (1-5 without
                                                am/pm: after midnight, e.g. ``tonight at 2`` is
                                                02:00 tomorrow)
``at 22:00``, ``at 10pm``, ``at 10:30 p.m.``,   ``scheduled``, the next time the clock shows it
``22:00``, ``at 22h``, ``at noon``,             (today, else tomorrow); ``at 10`` without am/pm
``at midnight``, ``after 22:00``, ``from 22:00``  is asked back (10:00 or 22:00?)
``tomorrow``, ``tomorrow morning/afternoon/     ``scheduled``: morning 08:00, noon 12:00,
evening/night``, ``tomorrow at 9am``,           afternoon 14:00, evening/night 20:00; a day
``this morning/afternoon``, ``today at 15:00``  without a time is its 00:00
``on Saturday``, ``saturday``, ``this           ``scheduled``: the coming day of that name (today
saturday``, ``on sat``, ``saturday night``,     if it is that day and the time has not passed),
``on saturday at 10pm``                         00:00 without a time
``this weekend``, ``at/on/over the weekend``    ``scheduled``: the coming Saturday 00:00 (today
                                                on a weekend)
``in 2 hours``, ``in 30 minutes``, ``in an      ``scheduled``: now plus that (at most 14 days)
hour``, ``in half an hour``, ``in 2h``
``2026-12-24``, ``2026-12-24 22:00``,           ``scheduled``: that time (an offset in the text
``2026-12-24T22:00+01:00``                      wins over the policy's time zone)
==============================================  ==================================================

Asked back (``clarification`` set, ``when`` unspecified, no time): "later", "soon",
"sometime", "eventually", "whenever", "shortly", "this/next week", "next month", "end of day",
"after hours", "next Saturday" (this coming one or the one after?), "next weekend",
"saturdays" (recurring), an hour without am/pm ("at 3"), a time that does not exist ("at
25:00", "at 13pm"), a deadline ("by 22:00", "before 6am", "until ..."), a time given for today
that has passed ("today at 08:00" at 10:00), a date in the past, two different times ("tonight
or on Saturday"), "now" with another time. A window named with a time ("on Saturday in the
maintenance window") keeps the time: the window rule applies anyway.

Example::

    read_when("upgrade acme-web on web-1 tonight", now=now, timezone="Europe/Berlin")
    # WhenReading(when=When.TONIGHT, not_before=<today 20:00 Berlin, in UTC>, clarification=None)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict

from patchpilot.core.errors import InvalidInputError
from patchpilot.core.intents import When
from patchpilot.core.schedule import SchedulePolicy, zone

__all__ = [
    "DAY_PARTS",
    "MAX_AHEAD",
    "WhenReading",
    "format_local",
    "parse_not_before",
    "policy_timezone",
    "read_when",
]

MAX_AHEAD: Final = timedelta(days=14)
"""Farthest relative offset ("in N days/hours") accepted."""

DAY_PARTS: Final[dict[str, int]] = {
    "morning": 8,
    "noon": 12,
    "midday": 12,
    "lunchtime": 12,
    "afternoon": 14,
    "evening": 20,
    "night": 20,
    "tonight": 20,
    "midnight": 24,
}
"""The hour each part of the day stands for (``midnight``: 00:00 of the next day)."""

_MAX_TEXT: Final = 4_000
_EXAMPLES: Final = (
    "now, tonight, at 22:00, tomorrow morning, on Saturday, in 2 hours or in the next "
    "maintenance window"
)
_TOKEN_RE: Final = re.compile(
    r"(?P<iso>\d{4}-\d{2}-\d{2}(?:[t ]\d{1,2}:\d{2}(?::\d{2})?(?:z|[+-]\d{2}:?\d{2})?)?)"
    r"(?![\w:.+~-])"
    r"|(?<![\w.:+~-])(?P<clock>\d{1,2}(?::\d{2})?)(?:\s?(?P<ampm>[ap])\.?m\.?|(?P<h>h))?"
    r"(?![\w:+~-]|\.\d)"
    r"|(?P<word>[a-z]+(?:'[a-z]+)?)"
    r"|(?P<at>@)"
)
_WEEKDAYS: Final = {
    "monday": 0,
    "tuesday": 1,
    "wednesday": 2,
    "thursday": 3,
    "friday": 4,
    "saturday": 5,
    "sunday": 6,
}
_WEEKDAY_ABBREV: Final = {
    "mon": 0,
    "tue": 1,
    "tues": 1,
    "wed": 2,
    "weds": 2,
    "thu": 3,
    "thur": 3,
    "thurs": 3,
    "fri": 4,
    "sat": 5,
    "sun": 6,
}
_NOW_WORDS: Final = frozenset({"now", "immediately", "asap", "straightaway"})
_TONIGHT_WORDS: Final = frozenset({"tonight", "tonite", "nite", "overnight"})
_TOMORROW_WORDS: Final = frozenset({"tomorrow", "tmrw", "tmr", "tomorow", "tommorow", "tommorrow"})
_WINDOW_WORDS: Final = frozenset({"window", "windows"})
_WINDOW_QUALIFIERS: Final = frozenset({"next", "maintenance", "patch", "change", "the", "in"})
_UNCLEAR_WORDS: Final = frozenset(
    {"later", "soon", "sometime", "eventually", "whenever", "shortly", "eod", "cob"}
)
_CLOCK_ANCHORS: Final = frozenset({"at", "after", "from", "around", "about", "approx", "@"})
_DEADLINES: Final = frozenset({"by", "before", "until", "till", "til"})
_UNITS: Final = {
    "minute": timedelta(minutes=1),
    "minutes": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "mins": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "hours": timedelta(hours=1),
    "hr": timedelta(hours=1),
    "hrs": timedelta(hours=1),
    "h": timedelta(hours=1),
    "day": timedelta(days=1),
    "days": timedelta(days=1),
}


class WhenReading(BaseModel):
    """What a message says about when its change should start.

    ``clarification`` set: the words were unclear; ``when`` is then ``unspecified`` and
    ``not_before`` ``None`` (the request must be asked back, never acted on).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    when: When = When.UNSPECIFIED
    not_before: AwareDatetime | None = None
    clarification: str | None = None
    phrases: tuple[str, ...] = ()
    """The time words read, as written (the grammar may treat them as understood)."""


def policy_timezone(schedule: SchedulePolicy) -> str:
    """The time zone a person's times are read in: the first maintenance window's, else
    ``schedule.timezone`` (the zone of blackout dates when there is no window; UTC by default).

    >>> from patchpilot.core.schedule import MaintenanceWindow
    >>> policy_timezone(SchedulePolicy(windows=(MaintenanceWindow(name="w", cron="0 22 * * *",
    ...     duration="PT2H", timezone="Europe/Berlin"),)))
    'Europe/Berlin'
    """
    return schedule.windows[0].timezone if schedule.windows else schedule.timezone


def format_local(moment: datetime, timezone: str | ZoneInfo) -> str:
    """``moment`` as a person reads it in ``timezone``: ``Sat 2026-12-12 22:00 Europe/Berlin``."""
    tz = timezone if isinstance(timezone, ZoneInfo) else zone(timezone)
    return f"{moment.astimezone(tz):%a %Y-%m-%d %H:%M} {tz.key}"


def _local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of the wall time ``day at`` in ``tz``.

    ``fold=0`` (PEP 495): a time skipped by a spring-forward change is read with the offset
    before it (02:30 becomes 03:30 after the change); a repeated time is its first occurrence.
    """
    return datetime.combine(day, at).replace(tzinfo=tz, fold=0).astimezone(UTC)


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class _Tok:
    kind: Literal["iso", "clock", "word"]
    text: str
    ampm: str | None = None
    hours_suffix: bool = False


@dataclass(frozen=True)
class _Piece:
    kind: Literal["now", "window", "day", "part", "clock", "delta", "instant", "unclear", "bad"]
    text: str
    day: tuple[str, int] | date | None = None  # ("offset", n) | ("weekday", k) | ("weekend", 0)
    hour: int = 0
    minute: int = 0
    ampm: str | None = None
    delta: timedelta | None = None
    instant: datetime | None = None
    message: str = ""
    tonight: bool = False
    ambiguous: bool = False
    """A clock hour that could be morning or evening ("at 10")."""


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for m in _TOKEN_RE.finditer(text):
        if m["iso"]:
            out.append(_Tok("iso", m["iso"]))
        elif m["clock"]:
            out.append(_Tok("clock", m["clock"], ampm=m["ampm"], hours_suffix=m["h"] is not None))
        else:
            out.append(_Tok("word", m["word"] or "@"))
    return out


def _clock_text(tok: _Tok) -> str:
    return tok.text + (f"{tok.ampm}m" if tok.ampm else "") + ("h" if tok.hours_suffix else "")


def _iso(text: str, tz: ZoneInfo) -> _Piece:
    try:
        if len(text) == 10:
            return _Piece("day", text, day=date.fromisoformat(text))
        value = datetime.fromisoformat(text.upper().replace(" ", "T"))
    except ValueError:
        return _Piece("bad", text, message=f"{text} is not a date or time that exists")
    if value.tzinfo is None:
        value = _local(value.date(), value.time(), tz)
    return _Piece("instant", text, instant=value.astimezone(UTC))


def _clock(tok: _Tok, prev: str | None) -> _Piece:
    hour_text, _, minute_text = tok.text.partition(":")
    hour, minute = int(hour_text), int(minute_text or 0)
    shown = _clock_text(tok)
    if tok.ampm is not None and not 1 <= hour <= 12:
        return _Piece("bad", shown, message=f"{shown} is not a time of day (1-12 am/pm)")
    if hour > 23 or minute > 59:
        return _Piece("bad", shown, message=f"{shown} is not a time of day (00:00-23:59)")
    if prev in _DEADLINES:
        return _Piece(
            "bad",
            shown,
            message=f"'{prev} {shown}' is a deadline: a run can wait until a time but not "
            f"promise to finish by one; say 'at {shown}' to start then",
        )
    ambiguous = tok.ampm is None and not tok.hours_suffix and not minute_text and 1 <= hour <= 11
    if tok.ampm is not None:
        hour = hour % 12 + (12 if tok.ampm == "p" else 0)
    return _Piece("clock", shown, hour=hour, minute=minute, ambiguous=ambiguous)


def _scan(text: str, tz: ZoneInfo) -> list[_Piece]:  # noqa: PLR0915
    toks = _tokens(text.lower()[:_MAX_TEXT])
    words = [t.text if t.kind == "word" else "" for t in toks]
    pieces: list[_Piece] = []
    i = 0
    while i < len(toks):
        tok, w = toks[i], words[i]
        prev = words[i - 1] if i else None
        nxt = words[i + 1] if i + 1 < len(toks) else None
        nxt2 = words[i + 2] if i + 2 < len(toks) else None
        step = 1
        if tok.kind == "iso":
            pieces.append(_iso(tok.text, tz))
        elif tok.kind == "clock":
            if prev == "in" and (tok.hours_suffix or nxt in _UNITS) and ":" not in tok.text:
                unit = timedelta(hours=1) if tok.hours_suffix else _UNITS[nxt or "h"]
                shown = f"in {_clock_text(tok)}" + ("" if tok.hours_suffix else f" {nxt}")
                pieces.append(_Piece("delta", shown, delta=int(tok.text) * unit))
                step = 1 if tok.hours_suffix else 2
            elif (
                prev in _CLOCK_ANCHORS
                or prev in _DEADLINES
                or tok.ampm
                or tok.hours_suffix
                or ":" in tok.text
                or _is_day_word(prev, None)
                or _is_day_word(nxt, None)
            ):
                piece = _clock(tok, prev)
                if prev in _CLOCK_ANCHORS or prev in _DEADLINES:
                    piece = replace(piece, text=f"{prev} {piece.text}")
                pieces.append(piece)
        elif w in _NOW_WORDS or (w == "right" and nxt in ("now", "away")):
            pieces.append(_Piece("now", w if w != "right" else f"right {nxt}"))
            step = 2 if w == "right" else 1
        elif w == "at" and nxt == "once":
            pieces.append(_Piece("now", "at once"))
            step = 2
        elif w == "as" and nxt == "soon" and nxt2 == "as":
            if i + 3 < len(toks) and words[i + 3] == "possible":
                pieces.append(_Piece("now", "as soon as possible"))
                step = 4
            else:
                pieces.append(_Piece("unclear", "as soon as"))
                step = 3
        elif w in _WINDOW_WORDS:
            start = i
            while start > 0 and words[start - 1] in _WINDOW_QUALIFIERS:
                start -= 1
            pieces.append(_Piece("window", " ".join(words[start : i + 1])))
        elif w in _TONIGHT_WORDS or (w in ("this", "later") and nxt in ("evening", "night")):
            shown = w if w in _TONIGHT_WORDS else f"{w} {nxt}"
            pieces.append(_Piece("day", shown, day=("offset", 0), tonight=True))
            pieces.append(_Piece("part", shown, hour=DAY_PARTS["tonight"], tonight=True))
            step = 1 if w in _TONIGHT_WORDS else 2
        elif w == "later" and nxt in ("tonight", "today"):
            pass  # "later tonight": the next word says when
        elif w == "this" and nxt in ("morning", "afternoon"):
            pieces.append(_Piece("day", f"this {nxt}", day=("offset", 0)))
            pieces.append(_Piece("part", f"this {nxt}", hour=DAY_PARTS[nxt or "morning"]))
            step = 2
        elif w == "today":
            pieces.append(_Piece("day", w, day=("offset", 0)))
        elif w in _TOMORROW_WORDS:
            pieces.append(_Piece("day", w, day=("offset", 1)))
        elif w in ("good", "last", "yesterday") and (nxt in DAY_PARTS or w == "yesterday"):
            step = 1 if w == "yesterday" else 2  # a greeting or the past: not a time to wait for
        elif w in DAY_PARTS:
            pieces.append(_Piece("part", w, hour=DAY_PARTS[w]))
        elif w in ("weekend", "weekends"):
            if prev == "next" or w == "weekends":
                pieces.append(_Piece("unclear", f"{prev} {w}" if prev == "next" else w))
            else:
                pieces.append(_Piece("day", w, day=("weekend", 0)))
        elif w in ("week", "month") and prev in ("this", "next"):
            pieces.append(_Piece("unclear", f"{prev} {w}"))
        elif w == "end" and nxt == "of" and nxt2 in ("day", "business", "the"):
            pieces.append(_Piece("unclear", "end of day"))
            step = 3
        elif w in ("after", "off") and nxt == "hours":
            pieces.append(_Piece("unclear", f"{w} hours"))
            step = 2
        elif (
            w in ("in", "within")
            and nxt in ("a", "an", "half")
            and (nxt2 in _UNITS or nxt2 in ("while", "bit", "an"))
        ):
            if nxt2 in ("while", "bit"):
                pieces.append(_Piece("unclear", f"in a {nxt2}"))
                step = 3
            elif nxt == "half":  # in half an hour
                unit_word = words[i + 3] if i + 3 < len(toks) else ""
                if unit_word in _UNITS:
                    pieces.append(
                        _Piece("delta", f"in half an {unit_word}", delta=_UNITS[unit_word] / 2)
                    )
                    step = 4
            elif nxt2 in _UNITS:
                pieces.append(_Piece("delta", f"in {nxt} {nxt2}", delta=_UNITS[nxt2 or "h"]))
                step = 3
        elif w in _UNCLEAR_WORDS:
            pieces.append(_Piece("unclear", w))
        elif (day := _weekday(w, prev)) is not None:
            shown = f"{prev} {w}" if prev in ("on", "this", "next") else w
            if prev == "next" or (w.endswith("s") and w.rstrip("s") in _WEEKDAYS):
                pieces.append(_Piece("unclear", shown))
            else:
                pieces.append(_Piece("day", shown, day=("weekday", day)))
        i += step
    return pieces


def _weekday(word: str, prev: str | None) -> int | None:
    if word in _WEEKDAYS:
        return _WEEKDAYS[word]
    if word.endswith("s") and word[:-1] in _WEEKDAYS:
        return _WEEKDAYS[word[:-1]]
    if word in _WEEKDAY_ABBREV and prev in ("on", "this", "next"):
        return _WEEKDAY_ABBREV[word]
    return None


def _is_day_word(word: str | None, prev: str | None) -> bool:
    if word is None:
        return False
    return (
        word in _TONIGHT_WORDS
        or word in _TOMORROW_WORDS
        or word in DAY_PARTS
        or word == "today"
        or _weekday(word, prev) is not None
    )


# --------------------------------------------------------------------------- reading


def _ask(reason: str, phrases: tuple[str, ...]) -> WhenReading:
    if reason.endswith("?"):
        return WhenReading(clarification=f"{reason} (e.g. {_EXAMPLES})", phrases=phrases)
    return WhenReading(
        clarification=f"{reason}: when should it start? ({_EXAMPLES})", phrases=phrases
    )


def read_when(text: str, *, now: datetime, timezone: str | ZoneInfo = "UTC") -> WhenReading:
    """What ``text`` says about when its change should start (see the module docstring).

    Args:
        text: The person's message (untrusted; only its first 4,000 characters are read,
            with linear regular expressions).
        now: The current time (timezone-aware).
        timezone: The policy's time zone (:func:`policy_timezone`): wall times are read in it.

    Returns:
        The reading: ``when``, ``not_before`` (UTC, ``None`` without a time) or a
        ``clarification`` question. A message without time words is ``unspecified``.

    Raises:
        ValueError: ``now`` is naive or ``timezone`` is not an IANA time zone.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    tz = timezone if isinstance(timezone, ZoneInfo) else zone(timezone)
    pieces = _scan(text, tz)
    phrases = tuple(dict.fromkeys(p.text for p in pieces))
    if not pieces:
        return WhenReading()
    bad = [p for p in pieces if p.kind == "bad"]
    if bad:
        return WhenReading(
            clarification=f"{bad[0].message}. When should it start?", phrases=phrases
        )
    unclear = [p for p in pieces if p.kind == "unclear"]
    if unclear:
        return _ask(f"'{unclear[0].text}' is not a time the run can wait for", phrases)
    kinds = {p.kind for p in pieces}
    if "now" in kinds and kinds - {"now"}:
        others = ", ".join(p.text for p in pieces if p.kind != "now")
        return _ask(f"now or {others}?", phrases)
    if "now" in kinds:
        return WhenReading(when=When.NOW, phrases=phrases)
    timed = [p for p in pieces if p.kind != "window"]
    if not timed:
        return WhenReading(when=When.NEXT_WINDOW, phrases=phrases)
    return _timed(timed, now.astimezone(UTC), tz, phrases)


def _distinct(pieces: list[_Piece], kind: str) -> list[_Piece]:
    seen: dict[object, _Piece] = {}
    for p in pieces:
        if p.kind == kind:
            seen.setdefault((p.day, p.hour, p.minute, p.delta, p.instant), p)
    return list(seen.values())


def _timed(
    pieces: list[_Piece], now: datetime, tz: ZoneInfo, phrases: tuple[str, ...]
) -> WhenReading:
    days, parts = _distinct(pieces, "day"), _distinct(pieces, "part")
    clocks, deltas = _distinct(pieces, "clock"), _distinct(pieces, "delta")
    instants = _distinct(pieces, "instant")
    for group in (days, parts, clocks, deltas, instants):
        if len(group) > 1:
            return _ask(f"two times given ({', '.join(p.text for p in group)})", phrases)
    absolute = deltas + instants
    if absolute and (days or parts or clocks or len(absolute) > 1):
        return _ask(f"two times given ({', '.join(phrases)})", phrases)
    if deltas:
        delta = deltas[0].delta or timedelta(0)
        if delta > MAX_AHEAD:
            return _ask(f"{deltas[0].text} is more than {MAX_AHEAD.days} days ahead", phrases)
        return WhenReading(when=When.SCHEDULED, not_before=now + delta, phrases=phrases)
    if instants:
        moment = instants[0].instant
        assert moment is not None
        if moment <= now:
            return _ask(f"{instants[0].text} has passed", phrases)
        return WhenReading(when=When.SCHEDULED, not_before=moment, phrases=phrases)
    day = days[0] if days else None
    part = parts[0] if parts else None
    tonight = bool(day and day.tonight) or bool(part and part.tonight)
    hour: int | None = None
    minute = 0
    if clocks:
        clock = clocks[0]
        hour, minute = clock.hour, clock.minute
        evening = tonight or (part is not None and part.hour >= DAY_PARTS["evening"])
        if evening and hour < 6:  # "tonight at 2", "tonight at 01:00": after midnight
            hour += 24
        elif clock.ambiguous:  # "at 10": read with the part of the day, else ask
            if evening or (part is not None and part.hour > 12):
                hour += 12
            elif part is None or part.hour >= 12:
                return _ask(
                    f"'{clock.text}' in the morning ({hour:02d}:00) or the evening "
                    f"({hour + 12:02d}:00)?",
                    phrases,
                )
    elif part is not None:
        hour = part.hour
    local_now = now.astimezone(tz)
    extra_days, hour = divmod(hour, 24) if hour is not None else (0, None)
    at = time(hour or 0, minute)
    if day is None:
        # A time alone: the next time the clock shows it.
        moment = _local(local_now.date(), at, tz) + timedelta(days=extra_days)
        if moment <= now:
            moment = _local(local_now.date() + timedelta(days=1 + extra_days), at, tz)
        when = When.TONIGHT if tonight else When.SCHEDULED
        return WhenReading(when=when, not_before=moment, phrases=phrases)
    today = local_now.date()
    if day.day == ("offset", 0) and hour is None:  # "today" alone
        return _ask("today: now, this afternoon, tonight or at a time?", phrases)
    target = _target_day(day.day, today)
    if (
        isinstance(day.day, tuple)
        and day.day[0] == "weekday"
        and target == today
        and hour is not None
        and _local(today, at, tz) + timedelta(days=extra_days) <= now
    ):
        target += timedelta(days=7)  # "on Monday at 08:00" said on Monday at 10:00
    moment = _local(target + timedelta(days=extra_days), at, tz)
    passed = moment <= now and not (tonight and not clocks and target == today)
    if passed and (hour is not None or target < today):
        return _ask(f"{format_local(moment, tz)} has passed", phrases)
    when = When.TONIGHT if tonight and target == local_now.date() else When.SCHEDULED
    return WhenReading(when=when, not_before=moment, phrases=phrases)


def _target_day(spec: tuple[str, int] | date | None, today: date) -> date:
    """The local day a day word names (``("offset", n)``, ``("weekday", k)``, the weekend)."""
    if isinstance(spec, date):
        return spec
    kind, n = spec if spec is not None else ("offset", 0)
    if kind == "offset":
        return today + timedelta(days=n)
    if kind == "weekend":
        return today if today.weekday() >= 5 else today + timedelta(days=5 - today.weekday())
    return today + timedelta(days=(n - today.weekday()) % 7)


def parse_not_before(value: str, *, now: datetime, timezone: str | ZoneInfo = "UTC") -> datetime:
    """``--not-before``: ISO 8601 (``2026-12-24T22:00``, ``2026-12-24T22:00+01:00``,
    ``2026-12-24``) or ``HH:MM`` (the next time the clock shows it), read in ``timezone``
    unless the text has an offset.

    Returns:
        The time, in UTC.

    Raises:
        InvalidInputError: not one of those forms, a time that does not exist, or a date or
            time in the past.
    """
    tz = timezone if isinstance(timezone, ZoneInfo) else zone(timezone)
    text = value.strip()
    if len(text) > 40:
        raise InvalidInputError("--not-before", "too long: give HH:MM or an ISO 8601 time")
    hhmm = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if hhmm:
        hour, minute = int(hhmm[1]), int(hhmm[2])
        if hour > 23 or minute > 59:
            raise InvalidInputError("--not-before", f"{text} is not a time of day (00:00-23:59)")
        local_now = now.astimezone(tz)
        moment = _local(local_now.date(), time(hour, minute), tz)
        if moment <= now:
            moment = _local(local_now.date() + timedelta(days=1), time(hour, minute), tz)
        return moment
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            moment = _local(date.fromisoformat(text), time(0), tz)
        else:
            parsed = datetime.fromisoformat(text)
            moment = (
                _local(parsed.date(), parsed.time(), tz)
                if parsed.tzinfo is None
                else parsed.astimezone(UTC)
            )
    except ValueError:
        raise InvalidInputError(
            "--not-before",
            f"{text!r} is not a time: give HH:MM or ISO 8601 (2026-12-24T22:00, optionally "
            f"with an offset; without one it is in {tz.key})",
        ) from None
    if moment <= now:
        raise InvalidInputError(
            "--not-before", f"{format_local(moment, tz)} has passed (now {format_local(now, tz)})"
        )
    return moment

"""Schedules: parsing, next occurrences (DST, blackouts, RRULE), exactly-once claims across two
processes, the missed-occurrence policies with a controllable clock, and the CLI.

Real SQLite stores under tmp_path; the clock is the ``now`` passed to ``claim_due``.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from patchpilot.app import schedules as app
from patchpilot.core.errors import InvalidInputError, UnknownTargetError
from patchpilot.core.schedules import (
    Schedule,
    ScheduleSpec,
    next_occurrences,
    parse_only_item,
)
from patchpilot.core.store import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _schedule(at: datetime = T0, **spec: Any) -> Schedule:
    return Schedule.create(ScheduleSpec(**spec), actor="ops", at=at, schedule_id="sch-0123456789ab")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store.db") as s:
        yield s


# --------------------------------------------------------------------------- parsing


def test_contract_post_body_is_a_whole_spec() -> None:
    spec = app.parse_spec({"kind": "scan", "cron": "*/5 * * * *", "timezone": "UTC"})
    assert (spec.kind, spec.cron, spec.timezone) == ("scan", "*/5 * * * *", "UTC")
    assert spec.duration == timedelta(hours=1)
    assert spec.cutoff == timedelta(0)
    assert spec.missed == "run-late"
    assert spec.grace == timedelta(hours=1)
    assert spec.enabled


def test_spec_durations_and_items_are_normalised() -> None:
    spec = ScheduleSpec(
        kind="run",
        cron="0  22 * * 1-5",
        timezone="Europe/Berlin",
        duration="3h",
        cutoff="PT1H",
        grace="90m",
        only=["acme-web=1.1.0", "openssl"],
        blackouts=["2026-12-24"],
    )
    doc = spec.model_dump(mode="json")
    assert doc["cron"] == "0 22 * * 1-5"
    assert (doc["duration"], doc["cutoff"], doc["grace"]) == ("PT3H", "PT1H", "PT1H30M")
    assert doc["only"] == ["acme-web=1.1.0", "openssl"]
    assert spec.blackouts == (date(2026, 12, 24),)
    assert parse_only_item("zlib1g=1:1.2.13.dfsg-1") == ("zlib1g", "1:1.2.13.dfsg-1")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"kind": "scan"}, "exactly one of cron and rrule"),
        ({"kind": "scan", "cron": "* * * * *", "rrule": "FREQ=DAILY"}, "exactly one"),
        ({"kind": "scan", "cron": "61 * * * *"}, "invalid cron"),
        ({"kind": "scan", "cron": "* * * *"}, "exactly 5 fields"),
        ({"kind": "scan", "cron": "* * * * *; rm -rf /"}, "cron"),
        ({"kind": "scan", "rrule": "FREQ=SOMETIMES"}, "RRULE"),
        ({"kind": "scan", "cron": "* * * * *", "timezone": "Mars/Olympus"}, "time zone"),
        ({"kind": "scan", "cron": "* * * * *", "duration": "1h", "cutoff": "1h"}, "cutoff"),
        ({"kind": "scan", "cron": "* * * * *", "duration": "8d"}, "duration"),
        ({"kind": "scan", "cron": "* * * * *", "only": ["acme-web"]}, "kind 'run'"),
        ({"kind": "run", "cron": "* * * * *", "only": ["a;b"]}, "only"),
        ({"kind": "run", "cron": "* * * * *", "only": ["xz"], "security": True}, "not both"),
        ({"kind": "scan", "cron": "* * * * *", "missed": "later"}, "missed"),
        ({"kind": "scan", "cron": "* * * * *", "url": "x"}, "url"),
        ({"kind": "deploy", "cron": "* * * * *"}, "kind"),
    ],
)
def test_bad_specs_are_refused_with_the_field(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        app.parse_spec(data)
    assert fragment in str(info.value)


def test_a_stored_schedule_round_trips_through_json() -> None:
    s = _schedule(kind="run", rrule="FREQ=WEEKLY;BYDAY=SA;BYHOUR=2", security=True)
    again = Schedule.model_validate_json(s.model_dump_json())
    assert again == s
    assert again.spec().security is True
    with pytest.raises(ValidationError):
        Schedule.model_validate({**s.document(), "id": "../etc"})


# --------------------------------------------------------------------------- next occurrences


def _starts(s: Schedule, now: datetime, n: int) -> list[str]:
    return [o.at.isoformat() for o in next_occurrences(s, now, n)]


def test_cron_occurrences_and_their_window() -> None:
    s = _schedule(kind="run", cron="0 22 * * *", duration="3h", cutoff="1h")
    first = next_occurrences(s, T0, 2)
    assert [o.at for o in first] == [
        datetime(2026, 3, 1, 22, tzinfo=UTC),
        datetime(2026, 3, 2, 22, tzinfo=UTC),
    ]
    assert first[0].window_end == datetime(2026, 3, 2, 1, tzinfo=UTC)
    assert first[0].cutoff_at == datetime(2026, 3, 2, 0, tzinfo=UTC)
    assert first[0].status is None
    assert not first[0].runnable


def test_wall_clock_time_across_the_spring_dst_change() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET -> 03:00 CEST.
    s = _schedule(
        at=datetime(2026, 3, 27, tzinfo=UTC),
        kind="scan",
        cron="0 22 * * *",
        timezone="Europe/Berlin",
    )
    assert _starts(s, datetime(2026, 3, 27, tzinfo=UTC), 3) == [
        "2026-03-27T21:00:00+00:00",  # 22:00 CET
        "2026-03-28T21:00:00+00:00",
        "2026-03-29T20:00:00+00:00",  # 22:00 CEST
    ]
    # A time the clocks skip (02:30 on the 29th) fires once, one offset later (03:30 CEST).
    gap = _schedule(
        at=datetime(2026, 3, 27, tzinfo=UTC),
        kind="scan",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
    )
    assert _starts(gap, datetime(2026, 3, 28, 12, tzinfo=UTC), 2) == [
        "2026-03-29T01:30:00+00:00",
        "2026-03-30T00:30:00+00:00",
    ]


def test_a_repeated_hour_in_autumn_fires_once() -> None:
    # Europe/Berlin, 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
    s = _schedule(
        at=datetime(2026, 10, 23, tzinfo=UTC),
        kind="scan",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
    )
    starts = _starts(s, datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert starts == ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
    # Asked from inside the repeated hour (after the first 02:30): not again that day.
    assert _starts(s, datetime(2026, 10, 25, 1, 10, tzinfo=UTC), 1) == ["2026-10-26T01:30:00+00:00"]


def test_blackout_dates_are_days_in_the_schedule_zone() -> None:
    s = _schedule(
        at=datetime(2026, 12, 20, tzinfo=UTC),
        kind="scan",
        cron="30 0 * * *",
        timezone="Europe/Berlin",
        blackouts=["2026-12-24", "2026-12-25"],
    )
    # 00:30 Berlin is 23:30 UTC the day before: the blackout is the Berlin date.
    assert _starts(s, datetime(2026, 12, 22, tzinfo=UTC), 3) == [
        "2026-12-22T23:30:00+00:00",  # the 23rd in Berlin
        "2026-12-25T23:30:00+00:00",  # the 26th: the 24th and 25th are blacked out
        "2026-12-26T23:30:00+00:00",
    ]


def test_rrule_occurrences_in_a_zone() -> None:
    s = _schedule(
        at=datetime(2026, 3, 1, tzinfo=UTC),
        kind="run",
        rrule="FREQ=WEEKLY;BYDAY=SA;BYHOUR=2;BYMINUTE=0",
        timezone="Europe/Berlin",
        duration="3h",
    )
    assert _starts(s, datetime(2026, 3, 20, tzinfo=UTC), 3) == [
        "2026-03-21T01:00:00+00:00",
        "2026-03-28T01:00:00+00:00",
        "2026-04-04T00:00:00+00:00",  # summer time
    ]
    # Without DTSTART the rule starts at midnight (in the zone) of the day it was created.
    counted = _schedule(at=T0.replace(hour=0), kind="scan", rrule="FREQ=DAILY;COUNT=2;BYHOUR=6")
    assert len(next_occurrences(counted, T0.replace(hour=0), 10)) == 2  # the rule ends


def test_no_occurrence_before_the_schedule_existed() -> None:
    s = _schedule(kind="scan", cron="0 * * * *")
    assert _starts(s, T0 - timedelta(days=3), 1) == ["2026-03-01T13:00:00+00:00"]
    with pytest.raises(ValueError, match="timezone-aware"):
        next_occurrences(s, T0.replace(tzinfo=None), 1)


# --------------------------------------------------------------------------- claiming


def _add(store: Store, at: datetime = T0, **spec: Any) -> Schedule:
    return app.add_schedule(store, spec, actor="ops", now=at)


def test_an_occurrence_is_claimed_once_on_time(store: Store) -> None:
    s = _add(store, kind="scan", cron="*/5 * * * *")
    assert app.claim_due(store, T0 + timedelta(minutes=4)) == []
    got = app.claim_due(store, T0 + timedelta(minutes=5, seconds=3))
    assert [(o.at, o.status, o.runnable) for o in got] == [
        (T0 + timedelta(minutes=5), "on-time", True)
    ]
    assert got[0].schedule == s
    assert got[0].claimed_at is not None
    # The same time again, a restarted service, a second scheduler: nothing more.
    assert app.claim_due(store, T0 + timedelta(minutes=5, seconds=30)) == []
    assert [o.status for o in store.occurrences(s.id)] == ["on-time"]
    store.attach_occurrence_run(s.id, got[0].at, "run-1")
    assert store.occurrences(s.id)[0].run_id == "run-1"


def test_two_threads_racing_claim_each_occurrence_once(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store(path) as store:
        _add(store, kind="scan", cron="* * * * *")
        results: list[list[str]] = [[], []]
        barrier = threading.Barrier(2)

        def claimer(i: int) -> None:
            barrier.wait()
            for k in range(1, 41):
                got = app.claim_due(store, T0 + timedelta(minutes=k, seconds=1))
                results[i].extend(o.at.isoformat() for o in got)

        threads = [threading.Thread(target=claimer, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    claimed = results[0] + results[1]
    assert len(claimed) == len(set(claimed)) == 40


def _claim_in_process(path: str, start: Any, queue: Any) -> None:
    """A second scheduler: its own process and store connection (module level: picklable)."""
    with Store(Path(path)) as store:
        start.wait()
        claimed: list[str] = []
        for k in range(1, 61):
            got = app.claim_due(store, T0 + timedelta(minutes=k, seconds=1))
            claimed.extend(o.at.isoformat() for o in got if o.runnable)
        queue.put(claimed)


def test_two_processes_racing_claim_each_occurrence_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store(path) as store:
        _add(store, kind="scan", cron="* * * * *")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(str(path), start, queue)) for _ in "ab"]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    claimed = results[0] + results[1]
    assert len(claimed) == 60, (len(results[0]), len(results[1]))
    assert len(set(claimed)) == 60  # no occurrence claimed by both
    with Store(path) as store:
        assert len(store.occurrences(limit=1000)) == 60


def test_disabled_and_removed_schedules_do_not_fire(store: Store) -> None:
    off = _add(store, kind="scan", cron="* * * * *", enabled=False)
    gone = _add(store, kind="scan", cron="* * * * *")
    app.remove_schedule(store, gone.id, actor="ops")
    assert app.claim_due(store, T0 + timedelta(minutes=3)) == []
    assert [s.id for s in app.list_schedules(store)] == [off.id]
    with pytest.raises(UnknownTargetError):
        app.remove_schedule(store, gone.id, actor="ops")


# --------------------------------------------------------------------------- missed occurrences


def test_run_late_within_grace_runs_the_latest_once_and_records_the_rest(store: Store) -> None:
    s = _add(store, kind="scan", cron="0 * * * *", grace="2h")
    # The service was down from 12:00 to 15:30: 13:00, 14:00, 15:00 were missed.
    got = app.claim_due(store, datetime(2026, 3, 1, 15, 30, tzinfo=UTC))
    assert [(o.at.hour, o.status) for o in got] == [(13, "missed"), (14, "missed"), (15, "late")]
    assert "superseded" in (got[0].reason or "")
    assert "30 min late" in (got[2].reason or "")
    assert got[2].runnable
    assert [o.runnable for o in got] == [False, False, True]
    assert app.claim_due(store, datetime(2026, 3, 1, 15, 31, tzinfo=UTC)) == []
    assert len(store.occurrences(s.id)) == 3


def test_run_late_past_grace_is_missed_with_the_reason(store: Store) -> None:
    _add(store, kind="scan", cron="0 13 * * *", grace="1h")
    got = app.claim_due(store, datetime(2026, 3, 1, 14, 30, tzinfo=UTC))
    assert [o.status for o in got] == ["missed"]
    assert "grace period" in (got[0].reason or "")


def test_skip_policy_records_a_missed_occurrence(store: Store) -> None:
    _add(store, kind="scan", cron="0 13 * * *", missed="skip")
    got = app.claim_due(store, datetime(2026, 3, 1, 13, 10, tzinfo=UTC))
    assert [(o.status, o.runnable) for o in got] == [("missed", False)]
    assert "policy is skip" in (got[0].reason or "")


def test_late_after_the_cutoff_is_missed(store: Store) -> None:
    _add(store, kind="run", cron="0 13 * * *", duration="1h", cutoff="30m", grace="2h")
    got = app.claim_due(store, datetime(2026, 3, 1, 13, 45, tzinfo=UTC))
    assert [o.status for o in got] == ["missed"]
    assert "cutoff" in (got[0].reason or "")


def test_a_long_outage_records_a_bounded_backlog(store: Store) -> None:
    _add(store, kind="scan", cron="* * * * *")
    got = app.claim_due(store, T0 + timedelta(days=1))  # 1440 occurrences missed
    assert len(got) == app.MAX_BACKLOG + 1
    assert got[-1].status == "on-time"  # 12:00 the next day is now
    assert "earlier missed occurrence(s) not recorded" in (got[0].reason or "")


# --------------------------------------------------------------------------- the run side


def test_scheduled_run_state_and_document_carry_the_trigger() -> None:
    from patchpilot.app.documents import RunDocument
    from patchpilot.core.policy import Policy
    from patchpilot.graphs.run import RunState, _cutoff_passed

    cut = datetime(2026, 3, 1, 14, tzinfo=UTC)
    policy = Policy.model_validate(
        {
            "sla_days": {
                "severity": dict.fromkeys(
                    ("critical", "high", "medium", "low", "unimportant", "unknown"), 30
                ),
                "ssvc": {"act": 1, "attend": 7, "track*": 30, "track": 90},
            }
        }
    )
    state = RunState(
        run_id="r1",
        target="all",
        hosts=[],
        policy=policy,
        trigger="schedule",
        schedule_id="sch-0123456789ab",
        cutoff_at=cut,
        window_end=cut + timedelta(hours=1),
    )
    assert _cutoff_passed(state, cut - timedelta(seconds=1)) is None
    assert "has passed" in (_cutoff_passed(state, cut) or "")
    assert RunState(run_id="r2", target="all", hosts=[], policy=policy).trigger == "cli"
    assert "trigger" in RunDocument.model_fields
    assert "schedule_id" in RunDocument.model_fields


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr("patchpilot.core.audit.current_actor", lambda: "alice")
    return CliRunner()


def test_cli_add_list_next_remove(cli: CliRunner) -> None:
    from patchpilot.cli.main import app as cli_app

    added = cli.invoke(
        cli_app,
        [
            "schedules", "add", "--kind", "run", "--cron", "0 22 * * 1-5",
            "--timezone", "Europe/Berlin", "--duration", "3h", "--cutoff", "1h",
            "--limit", "web-*", "--only", "acme-web=1.1.0", "--missed", "skip",
            "--grace", "30m", "--format", "json",
        ],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    doc = json.loads(added.stdout)
    assert doc["id"].startswith("sch-")
    assert doc["created_by"] == "alice"
    assert (doc["duration"], doc["cutoff"], doc["grace"]) == ("PT3H", "PT1H", "PT30M")

    scan = cli.invoke(cli_app, ["schedules", "add", "--kind", "scan", "--cron", "*/5 * * * *"])
    assert scan.exit_code == 0
    assert "added schedule sch-" in scan.stdout

    listed = cli.invoke(cli_app, ["schedules", "list", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    lst = json.loads(listed.stdout)
    assert lst["schema"] == "patchpilot.schedules/v1"
    assert [s["kind"] for s in lst["schedules"]] == ["run", "scan"]
    assert all(len(s["next"]) == 1 for s in lst["schedules"])
    assert "web-*" in cli.invoke(cli_app, ["schedules", "list"]).stdout

    nxt = cli.invoke(cli_app, ["schedules", "next", doc["id"], "-n", "3", "--format", "json"])
    assert nxt.exit_code == 0, nxt.output
    occ = json.loads(nxt.stdout)["occurrences"]
    assert len(occ) == 3
    assert all(o["schedule_id"] == doc["id"] for o in occ)
    first = datetime.fromisoformat(occ[0]["at"])
    assert datetime.fromisoformat(occ[0]["cutoff_at"]) - first == timedelta(hours=2)

    removed = cli.invoke(cli_app, ["schedules", "remove", doc["id"]])
    assert removed.exit_code == 0
    assert f"removed schedule {doc['id']}" in removed.stdout
    again = cli.invoke(cli_app, ["schedules", "list", "--format", "json"])
    assert [s["kind"] for s in json.loads(again.stdout)["schedules"]] == ["scan"]


def test_cli_refuses_a_bad_schedule(cli: CliRunner) -> None:
    from patchpilot.cli.main import app as cli_app

    bad = cli.invoke(cli_app, ["schedules", "add", "--kind", "scan", "--cron", "99 * * * *"])
    assert isinstance(bad.exception, InvalidInputError)
    assert "invalid cron" in str(bad.exception)
    unknown = cli.invoke(cli_app, ["schedules", "remove", "sch-000000000000"])
    assert isinstance(unknown.exception, UnknownTargetError)
    listed = cli.invoke(cli_app, ["schedules", "list", "--format", "json"])
    assert json.loads(listed.stdout)["schedules"] == []


# --------------------------------------------------------------------------- a scheduled patch run


@pytest.fixture
def run_harness(tmp_path: Path) -> Any:
    from patchpilot.core.policy import load_policy
    from tests.unit.test_graph_run import Harness, make_fleet, write_policy

    home = tmp_path / "home"
    return Harness(home, make_fleet(), load_policy(write_policy(home)))


def test_a_scheduled_runs_approval_expires_at_its_window_end(run_harness: Any) -> None:
    from tests.unit.test_graph_run import START, document_of

    h = run_harness
    end = START + timedelta(hours=3)
    waiting = h.start(
        trigger="schedule",
        schedule_id="sch-0123456789ab",
        not_before=START,
        window_end=end,
        cutoff_at=end - timedelta(hours=1),
    )
    assert waiting.status == "awaiting_approval"
    with Store(h.settings.store_path) as store:
        record = store.approval(waiting.run_id)
        run = store.get_run(waiting.run_id)
    assert record is not None
    assert record.expires_at == end  # not the policy's expires_after_hours
    assert run is not None
    assert run.params["trigger"] == "schedule"
    assert run.params["schedule_id"] == "sch-0123456789ab"
    doc = document_of(h, waiting)
    assert (doc["trigger"], doc["schedule_id"]) == ("schedule", "sch-0123456789ab")
    assert doc["window_end"] == end.isoformat()


def test_a_scheduled_run_approved_after_its_cutoff_starts_no_host(run_harness: Any) -> None:
    from tests.unit.test_graph_run import START

    h = run_harness
    cutoff = START + timedelta(hours=2)
    waiting = h.start(
        trigger="schedule",
        schedule_id="sch-0123456789ab",
        window_end=cutoff + timedelta(hours=1),
        cutoff_at=cutoff,
    )
    decision = h.decide(waiting, "approved")
    h.clock.now = cutoff + timedelta(minutes=1)
    done = h.resume(waiting.run_id, decision)
    assert done.status == "halted"
    assert "cutoff" in (done.reason or "")
    assert h.installed() == dict.fromkeys(h.fleet, "1.0.0")


def test_an_unscheduled_run_is_triggered_by_the_cli(run_harness: Any) -> None:
    h = run_harness
    waiting = h.start()
    with Store(h.settings.store_path) as store:
        run = store.get_run(waiting.run_id)
    assert run is not None
    assert (run.params["trigger"], run.params["schedule_id"]) == ("cli", None)


def test_a_security_schedule_starts_security_only_runs(store: Store) -> None:
    spec = app.parse_spec({"kind": "run", "cron": "0 13 * * *", "security_only": True})
    assert spec.security is True  # security_only is the same field
    secure = _add(store, kind="run", cron="0 13 * * *", security=True)
    plain = _add(store, kind="run", cron="0 13 * * *", limit="web-*")
    got = {o.schedule_id: o for o in app.claim_due(store, datetime(2026, 3, 1, 13, tzinfo=UTC))}
    assert app.start_arguments(got[secure.id])["security_only"] is True
    assert app.start_arguments(got[plain.id])["security_only"] is False


def test_start_arguments_of_claimed_occurrences(store: Store) -> None:
    run = _add(store, kind="run", cron="0 13 * * *", limit="web-*", only=["acme-web=1.1.0"])
    scan = _add(store, kind="scan", cron="0 13 * * *")
    got = {o.schedule_id: o for o in app.claim_due(store, datetime(2026, 3, 1, 13, tzinfo=UTC))}
    args = app.start_arguments(got[run.id])
    assert args["only"] == [("acme-web", "1.1.0")]
    assert args["limit"] == "web-*"
    assert args["occurrence"].cutoff_at == datetime(2026, 3, 1, 14, tzinfo=UTC)
    assert app.start_arguments(got[scan.id]) == {"trigger": "schedule", "schedule_id": scan.id}
    with pytest.raises(ValueError, match="runnable"):
        app.start_arguments(next_occurrences(run, T0, 1)[0])

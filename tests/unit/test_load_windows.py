"""Windows from load history (patchpilot/app/load.py, patchpilot/core/store/load.py): the
allowed slots of maintenance windows, synthetic load histories with a known quietest slot ->
suggested (per ring and per tag, across time zones), the ``load`` schedule kind (store
migration, claim, the executor's hook), a real collection from this machine over the local
transport, and ``patchpilot schedules suggest``."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from typer.testing import CliRunner

from patchpilot.app import schedules as app_schedules
from patchpilot.app.executor import Executor
from patchpilot.app.load import (
    allowed_slots,
    collect_load,
    rank_slots,
    slot_cron,
    suggest_windows,
)
from patchpilot.core.errors import UnknownTargetError
from patchpilot.core.models import Host
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.schedule import MaintenanceWindow
from patchpilot.core.schedules import Occurrence, Schedule, ScheduleSpec
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store
from patchpilot.core.store.load import LoadSample
from patchpilot.core.store.schema import MIGRATIONS, migrate

REPO = Path(__file__).resolve().parents[2]
BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 3, 2, 0, 0, tzinfo=BERLIN)  # a Monday, before the DST change
HOSTS = [
    Host(name="canary-1", address="10.0.0.1", tags=frozenset({"canary"})),
    Host(name="web-1", address="10.0.0.2", tags=frozenset({"web"})),
    Host(name="web-2", address="10.0.0.3", tags=frozenset({"web"})),
    Host(name="db-1", address="10.0.0.4", tags=frozenset({"db"})),
]


def policy_yaml(tmp: Path, schedule: dict[str, Any]) -> Path:
    data = yaml.safe_load((REPO / "configs" / "policy.yaml").read_text())
    data["schedule"] = schedule
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


WEEKNIGHTS: dict[str, Any] = {
    "windows": [
        {
            "name": "weeknights",
            "cron": "0 22 * * 1-5",
            "duration": "PT3H",
            "cutoff": "PT1H",
            "timezone": "Europe/Berlin",
        }
    ],
    "rings": [{"name": "canary", "tags": ["canary"]}, {"name": "broad"}],
}


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return load_policy(policy_yaml(tmp_path, WEEKNIGHTS))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store.db") as s:
        yield s


def history(
    hosts: list[str],
    quiet: tuple[int, int],
    *,
    weeks: int = 3,
    quiet_load: float = 0.2,
    start: datetime = START,
) -> list[LoadSample]:
    """Every 15 minutes for ``weeks`` weeks from ``start``: load 1.0 + hour/24 (+ 0.01 per
    host), ``quiet_load`` in the ``quiet`` (weekday, hour) slot of Berlin time; CPU follows."""
    samples: list[LoadSample] = []
    moment = start.astimezone(UTC)
    while moment < start.astimezone(UTC) + timedelta(weeks=weeks):
        local = moment.astimezone(BERLIN)
        for i, host in enumerate(hosts):
            busy = 1.0 + local.hour / 24 + i / 100
            load = quiet_load if (local.weekday(), local.hour) == quiet else busy
            samples.append(LoadSample(host=host, at=moment, load1=load, cpu=min(load / 4, 1.0)))
        moment += timedelta(minutes=15)
    return samples


# --------------------------------------------------------------------------- slots


def test_allowed_slots_of_a_window() -> None:
    window = MaintenanceWindow(
        name="w", cron="0 22 * * 1-5", duration="PT3H", cutoff="PT1H", timezone="UTC"
    )
    assert allowed_slots(window) == {(d, h) for d in range(5) for h in (22, 23)}
    sunday = MaintenanceWindow(name="s", cron="30 23 * * 0", duration="PT3H")
    assert allowed_slots(sunday) == {(6, 23), (0, 0), (0, 1), (0, 2)}  # wraps into Monday
    assert slot_cron((2, 23)) == "0 23 * * 3"
    assert slot_cron((6, 4)) == "0 4 * * 0"


def test_rank_slots_quietest_first_and_thin_evidence_last() -> None:
    thin = LoadSample(host="web-1", at=datetime(2026, 3, 5, 5, 10, tzinfo=BERLIN), load1=0.0)
    samples = [  # four samples in each hour, but a single one on Thursday at 05:00
        s for s in history(["web-1"], (2, 23), weeks=1) if s.at.astimezone(BERLIN).hour != 5
    ]
    slots = {(2, 23), (1, 22), (4, 3), (3, 5)}
    ranked = rank_slots(slots, [*samples, thin], BERLIN, min_samples=4)
    assert [(s.slot, s.samples, s.enough) for s in ranked] == [
        ("Wed 23:00", 4, True),
        ("Fri 03:00", 4, True),
        ("Tue 22:00", 4, True),
        ("Thu 05:00", 1, False),  # the quietest, but one sample is no evidence
    ]
    assert ranked[0].median_load == 0.2
    assert ranked[0].median_cpu == 0.05
    assert ranked[1].median_load == 1.125
    strict = rank_slots(slots, samples, BERLIN, min_samples=5)
    assert [(s.slot, s.enough) for s in strict] == [
        ("Wed 23:00", False),
        ("Fri 03:00", False),
        ("Tue 22:00", False),
        ("Thu 05:00", False),
    ]
    assert strict[-1].samples == 0
    assert strict[-1].median_load is None


# --------------------------------------------------------------------------- suggestions


def test_the_known_quietest_slot_is_suggested_per_ring(store: Store, policy: Policy) -> None:
    store.record_load_samples(history(["canary-1"], (2, 23)))  # Wed 23:00 Berlin
    store.record_load_samples(history(["web-1", "web-2", "db-1"], (0, 22)))  # Mon 22:00
    report = suggest_windows(store, policy, HOSTS, now=START + timedelta(weeks=3))
    canary, broad = report.groups
    assert (canary.group, canary.kind, canary.hosts) == ("canary", "ring", ("canary-1",))
    assert canary.suggestion is not None
    assert (canary.suggestion.slot, canary.suggestion.cron) == ("Wed 23:00", "0 23 * * 3")
    assert canary.suggestion.window == "weeknights"
    assert canary.suggestion.timezone == "Europe/Berlin"
    assert canary.suggestion.median_load == 0.2
    assert canary.suggestion.samples == 12  # 4 per hour, 3 weeks
    assert canary.suggestion.busiest == "Mon 23:00"  # 23:00 is the busiest hour; ties: earliest
    assert canary.text == (
        "ring canary: start in window weeknights at Wed 23:00 (Europe/Berlin): median load 0.2 "
        "over 12 samples; the busiest allowed slot is Mon 23:00 (median 1.9583)"
    )
    assert broad.suggestion is not None
    assert broad.suggestion.slot == "Mon 22:00"
    assert broad.samples == 3 * len(history(["x"], (0, 0)))
    [window] = canary.windows
    assert len(window.slots) == 10  # two startable hours on five weeknights
    assert all(s.weekday < 5 and s.hour in (22, 23) for s in window.slots)


def test_a_quiet_slot_outside_the_windows_is_not_proposed(store: Store, policy: Policy) -> None:
    store.record_load_samples(history(["canary-1"], (5, 4), quiet_load=0.0))  # Sat 04:00
    report = suggest_windows(store, policy, HOSTS, group="canary")
    [canary] = report.groups
    assert canary.suggestion is not None
    assert canary.suggestion.slot == "Mon 22:00"  # the quietest hour the window allows
    assert canary.suggestion.median_load == round(1.0 + 22 / 24, 4)


def test_group_by_tag_always_open_and_no_history(store: Store, tmp_path: Path) -> None:
    open_policy = load_policy(policy_yaml(tmp_path, {"always_open": True, "timezone": "UTC"}))
    store.record_load_samples(history(["web-1", "web-2"], (5, 4)))  # Sat 04:00 Berlin = 03 UTC
    [web] = suggest_windows(store, open_policy, HOSTS, group="web").groups
    assert (web.group, web.kind, web.hosts) == ("web", "tag", ("web-1", "web-2"))
    assert web.suggestion is not None
    assert (web.suggestion.window, web.suggestion.slot) == ("always-open", "Sat 03:00")
    assert len(web.windows[0].slots) == 7 * 24
    [db] = suggest_windows(store, open_policy, HOSTS, group="db").groups
    assert db.suggestion is None
    assert db.text.startswith("tag db: not enough load history in the allowed windows yet")
    with pytest.raises(UnknownTargetError):
        suggest_windows(store, open_policy, HOSTS, group="nope")


def test_old_samples_are_left_out_with_since(store: Store, policy: Policy) -> None:
    store.record_load_samples(history(["canary-1"], (2, 23)))
    later = START + timedelta(weeks=3)
    report = suggest_windows(store, policy, HOSTS, group="canary", since=later)
    assert report.groups[0].samples == 0
    assert report.groups[0].suggestion is None


# --------------------------------------------------------------------------- the store


def test_samples_are_kept_once_and_read_back_by_host_and_time(store: Store) -> None:
    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    one = LoadSample(host="web-1", at=at, load1=0.5, cpu=0.1, memory_available=1e9)
    assert store.record_load_samples([one, one.model_copy(update={"host": "web-2"})]) == 2
    assert store.record_load_samples([one.model_copy(update={"load1": 9.0})]) == 0
    assert store.load_samples(hosts=["web-1"]) == [one]
    assert store.load_samples(hosts=[]) == []
    assert store.load_samples(since=at + timedelta(seconds=1)) == []
    assert [s.host for s in store.load_samples()] == ["web-1", "web-2"]
    with pytest.raises(ValueError, match="finite"):
        LoadSample(host="x", at=at, memory_available=float("inf"))


def test_a_v10_store_migrates_and_takes_load_schedules(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    scan = Schedule.create(
        ScheduleSpec(kind="scan", cron="0 3 * * *"),
        actor="ops",
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    migrate(conn, MIGRATIONS[:10])
    conn.execute(
        "INSERT INTO schedules (id, kind, enabled, created_at, doc) VALUES (?, 'scan', 1, ?, ?)",
        (scan.id, scan.created_at.isoformat(), scan.model_dump_json()),
    )
    conn.execute(
        "INSERT INTO schedule_occurrences (schedule_id, occurrence_at, kind, timezone, status,"
        " window_end, cutoff_at, claimed_at) VALUES (?, '2026-01-02T03:00:00.000000+00:00',"
        " 'scan', 'UTC', 'on-time', 'x', 'x', 'x')",
        (scan.id,),
    )
    conn.execute("COMMIT")
    conn.close()
    now = datetime(2026, 3, 2, 10, 0, 30, tzinfo=UTC)
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert [s.id for s in store.schedules()] == [scan.id]
        assert store.last_occurrence(scan.id) == datetime(2026, 1, 2, 3, tzinfo=UTC)
        load = app_schedules.add_schedule(
            store,
            {"kind": "load", "cron": "*/15 * * * *"},
            actor="ops",
            now=now - timedelta(minutes=5),
        )
        claimed = [o for o in app_schedules.claim_due(store, now) if o.schedule_id == load.id]
        assert [(o.kind, o.status, o.at) for o in claimed] == [
            ("load", "on-time", datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
        ]
    with pytest.raises(ValueError, match="only and security"):
        ScheduleSpec(kind="load", cron="*/15 * * * *", security=True)


# --------------------------------------------------------------------------- collection


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", feeds={"auto_update": False})


def test_collect_load_of_this_machine_over_the_local_transport(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    here = Host(name="here", address="127.0.0.1", transport="local")
    closed = Host(name="closed", address="127.0.0.1", port=1)  # nothing listens: no sample
    with Store(settings.store_path) as store:
        result = collect_load(
            settings, store, [here, closed], schedule_id="sch-0123456789ab", interval_s=0.2, count=2
        )
        [sample] = result.samples
        assert sample.host == "here"
        assert sample.load1 is not None
        assert sample.load1 >= 0
        assert sample.cpu is not None
        assert 0.0 <= sample.cpu <= 1.0
        assert sample.memory_available is not None
        assert sample.memory_available > 0
        assert result.stored == 1
        assert list(result.failed) == ["closed"]
        assert store.load_samples(hosts=["here"]) == [sample]
        assert store.load_samples(hosts=["here"])[0].schedule_id == "sch-0123456789ab"


def test_the_executor_collects_load_when_a_load_occurrence_fires(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.home.mkdir(parents=True)
    inventory = settings.home / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump({"hosts": {"here": {"address": "127.0.0.1", "transport": "local"}}})
    )
    now = datetime.now(UTC)
    schedule = Schedule.create(
        ScheduleSpec(kind="load", cron="*/15 * * * *"), actor="ops", at=now - timedelta(hours=1)
    )
    occurrence = Occurrence(
        schedule_id=schedule.id,
        kind="load",
        at=now - timedelta(seconds=30),
        window_end=now + timedelta(hours=1),
        cutoff_at=now + timedelta(hours=1),
        timezone="UTC",
        status="on-time",
        schedule=schedule,
    )
    fired: list[datetime] = []

    def claim_due(store: Store, at: datetime) -> list[Occurrence]:
        fired.append(at)
        return [occurrence] if len(fired) == 1 else []

    executor = Executor(
        settings, inventory, policy_yaml(tmp_path, {"always_open": True}), claim_due=claim_due
    )
    executor.start()
    try:
        executor.tick()
        with Store(settings.store_path) as store:
            deadline = time.monotonic() + 60  # a wait for the thread, not a timed assertion
            while not store.load_samples() and time.monotonic() < deadline:
                time.sleep(0.1)
            samples = store.load_samples()
            assert store.list_runs() == []  # a load occurrence starts no run
    finally:
        assert executor.stop()
    assert [(s.host, s.schedule_id) for s in samples] == [("here", schedule.id)]


# --------------------------------------------------------------------------- the CLI


def test_schedules_suggest_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from patchpilot.cli.main import app

    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATCHPILOT_HOME", str(tmp_path / "home"))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {"hosts": {h.name: {"address": h.address, "tags": sorted(h.tags)} for h in HOSTS}}
        )
    )
    policy = policy_yaml(tmp_path, WEEKNIGHTS)
    day = (datetime.now(UTC) - timedelta(weeks=3)).astimezone(BERLIN).date()
    start = datetime.combine(day, dt_time(0), tzinfo=BERLIN)
    with Store(tmp_path / "home" / "patchpilot.db") as store:
        store.record_load_samples(history(["canary-1"], (3, 22), start=start))  # Thu 22:00
    runner = CliRunner()
    args = ["schedules", "suggest", "-i", str(inventory), "--policy", str(policy)]
    result = runner.invoke(app, [*args, "--group", "canary", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "patchpilot.window-suggestions/v1"
    [canary] = doc["groups"]
    assert canary["suggestion"]["slot"] == "Thu 22:00"
    assert canary["suggestion"]["cron"] == "0 22 * * 4"
    table = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "ring canary: start in window weeknights at Thu 22:00" in table.stdout
    assert "ring broad: not enough load history" in table.stdout
    unknown = runner.invoke(app, [*args, "--group", "nope"])
    assert isinstance(unknown.exception, UnknownTargetError)  # main() exits 2 on it

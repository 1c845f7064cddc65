"""The service's executor (patchpilot/app/executor.py) on scripted Debian hosts.

Real executor threads, real SQLite store and checkpoints, real run graph, policy and agents;
hosts are :class:`tests.fakes.FakeDebianHost` reached through the injected run-context factory
(as tests/unit/test_graph_run.py does). The crash test runs an executor in a child process that
dies by SIGKILL at a failpoint (patchpilot/core/failpoints.py) mid-rollout; a new executor's
``start()`` finishes the run and no host gets the install twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from patchpilot.app import runs
from patchpilot.app.approvals import DecisionSource, record_decision
from patchpilot.app.executor import Executor, RunRequest, ScanRequest
from patchpilot.app.notify import Notifier
from patchpilot.core.audit import read_events
from patchpilot.core.errors import HostBusyError
from patchpilot.core.events import Event
from patchpilot.core.policy import Policy
from patchpilot.core.schedules import Occurrence, Schedule, ScheduleSpec
from patchpilot.core.settings import NotificationSettings, Settings
from patchpilot.core.store import Store
from patchpilot.graphs.run import RunContext
from tests.fakes import FakeDebianHost, fleet_factory
from tests.unit.test_graph_run import (
    HOSTS,
    START,
    Clock,
    PersistedHarness,
    make_fleet,
    write_policy,
)

REPO = Path(__file__).resolve().parents[2]
ONLY = ("acme-web=1.1.0",)


def write_inventory(home: Path) -> Path:
    """canary-1, web-1, db-1 (as tests/unit/test_graph_run.py's HOSTS)."""
    data = {
        "hosts": {
            h.name: {"address": h.address, "tags": list(h.tags), "criticality": h.criticality}
            for h in HOSTS
        }
    }
    path = home / "inventory.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def no_schedules(store: Store, now: datetime) -> Sequence[Occurrence]:
    return []


def make_executor(
    home: Path,
    fleet: dict[str, FakeDebianHost],
    *,
    claim_due: Callable[[Store, datetime], Sequence[Occurrence]] = no_schedules,
    workers: int = 2,
    clock: Clock | None = None,
) -> Executor:
    """An executor over the fake fleet; no feeds are fetched (hermetic)."""
    settings = Settings(
        home=home, feeds={"auto_update": False}, service={"workers": workers, "tick": 0.2}
    )
    clock = clock or Clock()

    def context(settings: Settings, store: Store, policy: Policy, actor: str) -> RunContext:
        from patchpilot.core.audit import AuditLog

        return RunContext(
            settings=settings,
            store=store,
            policy=policy,
            transport_factory=fleet_factory(fleet),
            clock=clock,
            audit=AuditLog.for_settings(settings, actor=actor),
        )

    return Executor(
        settings,
        write_inventory(home),
        home / "policy.yaml",
        run_context_factory=context,
        claim_due=claim_due,
        clock=clock,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def installed(fleet: dict[str, FakeDebianHost]) -> dict[str, str]:
    return {n: h.installed["acme-web"] for n, h in fleet.items()}


def test_a_submitted_run_is_queued_at_once_then_completes_on_a_worker(home: Path) -> None:
    write_policy(home, approvals={"tags": []})
    fleet = make_fleet()
    executor = make_executor(home, fleet)
    executor.start()
    try:
        run_id = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
        run = executor.wait(run_id, timeout=90)
    finally:
        assert executor.stop()
    assert run is not None
    assert run.status == "completed", run.summary
    assert installed(fleet) == dict.fromkeys(fleet, "1.1.0")
    assert all(len(h.installs) == 1 for h in fleet.values())
    assert run.params["trigger"] == "api"
    assert run.params["requested_by"] == "olivia"
    with Store(home / "patchpilot.db") as store:
        [job] = store.jobs(run_id=run_id)
        assert job.status == "done"
        settings = Settings(home=home)
        document = runs.report(settings, store, run_id)
    assert document is not None
    assert document["status"] == "completed"
    assert {d["host"] for d in document["deployments"]} == set(fleet)
    actions = [e.action for e in read_events(home / "audit.log", run_id=run_id)]
    assert actions[0] == "run.queued"
    assert "run.started" in actions


def test_a_run_awaiting_approval_continues_after_a_decision(home: Path) -> None:
    write_policy(home)  # web-1 and db-1 are prod: the run waits for approval
    fleet = make_fleet()
    executor = make_executor(home, fleet)
    executor.start()
    try:
        run_id = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
        waiting = executor.wait(run_id, timeout=90)
        assert waiting is not None
        assert waiting.status == "awaiting_approval"
        assert installed(fleet) == dict.fromkeys(fleet, "1.0.0")
        with Store(home / "patchpilot.db") as store:
            record_decision(
                executor.settings,
                store,
                run_id,
                "approved",
                comment="ok",
                source=DecisionSource(parser="cli", words="approve"),
                actor="alice",
            )
        assert executor.continue_run(run_id, actor="alice")
        done = executor.wait(run_id, timeout=90)
    finally:
        assert executor.stop()
    assert done is not None
    assert done.status == "completed", done.summary
    assert installed(fleet) == dict.fromkeys(fleet, "1.1.0")
    events = read_events(home / "audit.log", run_id=run_id)
    granted = [e for e in events if e.action == "approval.granted"]
    assert [e.actor for e in granted] == ["alice"]


def test_a_decision_nobody_continued_is_continued_by_the_next_start(home: Path) -> None:
    write_policy(home)
    fleet = make_fleet()
    executor = make_executor(home, fleet)
    executor.start()
    try:
        run_id = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
        waiting = executor.wait(run_id, timeout=90)
        assert waiting is not None
        assert waiting.status == "awaiting_approval"
    finally:
        assert executor.stop()
    with Store(home / "patchpilot.db") as store:  # decided; the decider never continued it
        record_decision(
            Settings(home=home),
            store,
            run_id,
            "approved",
            comment=None,
            source=DecisionSource(parser="cli", words="approve"),
            actor="alice",
        )
    again = make_executor(home, fleet)
    assert again.start() == [run_id]
    try:
        done = again.wait(run_id, timeout=90)
    finally:
        assert again.stop()
    assert done is not None
    assert done.status == "completed", done.summary


def test_a_second_run_on_a_busy_host_is_refused_and_cancel_frees_it(home: Path) -> None:
    write_policy(home)
    executor = make_executor(home, make_fleet())  # not started: runs stay queued
    try:
        first = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
        with Store(home / "patchpilot.db") as store:
            run = store.get_run(first)
            assert run is not None
            assert run.status == "queued"
        with pytest.raises(HostBusyError, match=f"web-1 is in run {first}") as caught:
            executor.submit_run(RunRequest(limit="web-1"), actor="bob")
        assert caught.value.hosts == ("web-1",)
        assert caught.value.run_id == first
        scan = executor.submit_scan(ScanRequest(limit="web-1"), actor="bob")  # scans only read
        assert executor.cancel(first, actor="olivia") == "cancelled"
        second = executor.submit_run(RunRequest(limit="web-1"), actor="bob")
        with Store(home / "patchpilot.db") as store:
            cancelled = store.get_run(first)
            assert cancelled is not None
            assert cancelled.status == "cancelled"
            assert [j.status for j in store.jobs(run_id=first)] == ["cancelled"]
            assert {j.run_id for j in store.jobs(status="queued")} == {scan, second}
    finally:
        executor.stop()
    with pytest.raises(Exception, match="ended already"):
        make_executor(home, make_fleet()).cancel(first, actor="olivia")


def test_a_run_being_driven_gets_a_cancel_request_in_the_store(home: Path) -> None:
    write_policy(home)
    executor = make_executor(home, make_fleet())
    try:
        run_id = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
        with Store(home / "patchpilot.db") as store:
            job = store.claim_job(executor.owner)  # as a worker would
            assert job is not None
            assert job.run_id == run_id
        assert executor.cancel(run_id, actor="olivia") == "cancelling"
        assert executor.cancel(run_id, actor="bob") == "cancelling"  # the first request stands
        with Store(home / "patchpilot.db") as store:
            request = store.cancel_request(run_id)
            run = store.get_run(run_id)
        assert request is not None
        assert request.requested_by == "olivia"
        assert run is not None
        assert run.status == "queued"  # the worker driving it ends it at its next safe point
    finally:
        executor.stop()
    actions = [(e.action, e.actor) for e in read_events(home / "audit.log", run_id=run_id)]
    assert actions.count(("run.cancel_requested", "olivia")) == 1


def test_the_cli_cancels_a_queued_run_and_refuses_an_ended_one(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from patchpilot.cli.main import app as cli_app

    monkeypatch.setattr("patchpilot.core.audit.current_actor", lambda: "carol")
    write_policy(home)
    executor = make_executor(home, make_fleet())  # not started: the run stays queued
    try:
        run_id = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
    finally:
        executor.stop()
    cli = CliRunner()
    first = cli.invoke(cli_app, ["--home", str(home), "cancel", run_id])
    assert first.exit_code == 0, first.output
    assert f"run {run_id}: cancelled" in first.stdout
    again = cli.invoke(cli_app, ["--home", str(home), "cancel", run_id])
    assert again.exit_code != 0  # main() maps the StoreError to exit 1 with its message
    assert "ended already" in str(again.exception)
    assert cli.invoke(cli_app, ["--home", str(home), "cancel", "../etc"]).exit_code == 2
    with Store(home / "patchpilot.db") as store:
        run = store.get_run(run_id)
    assert run is not None
    assert run.status == "cancelled"
    events = read_events(home / "audit.log", run_id=run_id)
    assert [e.actor for e in events if e.action == "run.cancelled"] == ["carol"]


class CancellingHost(FakeDebianHost):
    """A fake host whose install asks the executor to cancel the run (once, for the whole
    fleet): the cancel arrives while the first host is being installed."""

    def __init__(self, *args: Any, on_install: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_install = on_install

    def _install(self, argv: tuple[str, ...]) -> Any:
        result = super()._install(argv)
        self.on_install()
        return result


@pytest.mark.parametrize(
    "schedule",
    [
        None,  # the shipped rings: canary-1 alone in "canary", seen before the next ring
        {"rings": [{"name": "all"}], "waves": [3], "rate": {"max_concurrency": 1}},  # in a ring
    ],
    ids=["between-rings", "inside-a-ring"],
)
def test_a_run_cancelled_mid_deployment_stops_before_the_next_host(
    home: Path, schedule: dict[str, Any] | None
) -> None:
    write_policy(home, approvals={"tags": []}, **({"schedule": schedule} if schedule else {}))
    asked: list[str] = []
    executor: Executor | None = None

    def cancel_once() -> None:
        if asked or executor is None:
            return
        with Store(home / "patchpilot.db") as store:
            [run] = store.list_runs()
        asked.append(executor.cancel(run.run_id, actor="otto"))

    plain = make_fleet()
    fleet: dict[str, FakeDebianHost] = {
        name: CancellingHost(
            name, dict(host.installed), dict(host.available), on_install=cancel_once
        )
        for name, host in plain.items()
    }
    executor = make_executor(home, fleet)
    executor.start()
    try:
        run_id = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
        done = executor.wait(run_id, timeout=90)
    finally:
        assert executor.stop()
    assert asked == ["cancelling"]
    assert done is not None
    assert done.status == "cancelled", done.summary
    first = [n for n, h in fleet.items() if h.installs]
    assert len(first) == 1  # the host being installed finished; no other host started
    assert installed(fleet) == {n: "1.1.0" if n in first else "1.0.0" for n in fleet}
    with Store(home / "patchpilot.db") as store:
        document = runs.report(Settings(home=home), store, run_id)
    assert document is not None
    assert document["status"] == "cancelled"
    rows = {d["host"]: (d["status"], d["reason"]) for d in document["deployments"]}
    assert rows == {
        n: ("installed", None) if n in first else ("skipped", "cancelled by otto") for n in fleet
    }
    assert (document["reason"] or "").startswith("cancelled by otto")
    events = read_events(home / "audit.log", run_id=run_id)
    assert [e.actor for e in events if e.action == "run.cancel_requested"] == ["otto"]
    assert [e.action for e in events if e.action == "run.finished"] == ["run.finished"]
    assert any(e.action == "run.cancelled" for e in events)


def test_a_security_only_run_plans_only_security_updates_and_says_what_it_left_out(
    home: Path,
) -> None:
    write_policy(home, approvals={"tags": []})
    fleet = make_fleet()
    for host in fleet.values():  # zlib1g pending from bookworm-security; acme-web is not
        host.installed["zlib1g"] = "1:1.2.13.dfsg-1"
        host.available["zlib1g"] = ["1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1"]
        host.security = frozenset({"zlib1g"})
    executor = make_executor(home, fleet)
    executor.start()
    try:
        run_id = executor.submit_run(RunRequest(security_only=True), actor="olivia")
        done = executor.wait(run_id, timeout=90)
    finally:
        assert executor.stop()
    assert done is not None
    assert done.status == "completed", done.summary
    assert done.params["security_only"] is True
    assert installed(fleet) == dict.fromkeys(fleet, "1.0.0")  # acme-web left out
    assert {n: h.installed["zlib1g"] for n, h in fleet.items()} == dict.fromkeys(
        fleet, "1:1.2.13.dfsg-1+deb12u1"
    )
    with Store(home / "patchpilot.db") as store:
        document = runs.report(Settings(home=home), store, run_id)
    assert document is not None
    plan = document["plan"]
    assert {(i["host"], i["package"]) for i in plan["items"]} == {(n, "zlib1g") for n in fleet}
    left_out = {(e["host"], e["package"]): e for e in plan["excluded"]}
    for name in fleet:
        assert left_out[(name, "acme-web")]["exclusion"] == "not-security"
        assert left_out[(name, "acme-web")]["reason"].startswith("not a security update")


def test_a_chat_change_is_queued_with_its_policy_and_waits_for_approval(home: Path) -> None:
    from patchpilot.app.chat import CHAT_APPROVAL, ChangeOrder
    from patchpilot.app.executor import chat_run_request
    from patchpilot.core.policy import load_policy

    write_policy(home, approvals={"tags": []})  # the policy alone would not ask
    fleet = make_fleet()
    executor = make_executor(home, fleet)
    order = ChangeOrder(
        hosts=tuple(h for h in HOSTS if h.name == "web-1"),
        target="chat: patch acme-web on web-1",
        policy=load_policy(home / "policy.yaml"),
        only=(("acme-web", None),),
        dry_run=False,
        rollback=None,
        must_approve=CHAT_APPROVAL,
        not_before=None,
        security_only=False,
    )
    run_id = executor.submit_run(chat_run_request(order), actor="cora", trigger="chat")
    with Store(home / "patchpilot.db") as store:
        queued = store.get_run(run_id)
    assert queued is not None
    assert queued.status == "queued"  # nothing ran yet: the executor is not started
    assert queued.params["trigger"] == "chat"
    assert queued.params["requested_by"] == "cora"
    executor.start()
    try:
        waiting = executor.wait(run_id, timeout=90)
    finally:
        assert executor.stop()
    assert waiting is not None
    assert waiting.status == "awaiting_approval"
    with Store(home / "patchpilot.db") as store:
        record = store.approval(run_id)
    assert record is not None
    assert record.reasons[0] == CHAT_APPROVAL
    assert {i["host"] for i in record.payload["items"]} == {"web-1"}
    assert installed(fleet) == dict.fromkeys(fleet, "1.0.0")


def test_a_due_schedule_occurrence_starts_a_run_marked_as_scheduled(home: Path) -> None:
    write_policy(home, approvals={"tags": []})
    fleet = make_fleet()
    schedule = Schedule.create(
        ScheduleSpec(kind="run", cron="0 10 * * *", only=ONLY),
        actor="sam",
        at=START - timedelta(days=1),
    )
    occurrence = Occurrence(
        schedule_id=schedule.id,
        kind="run",
        at=START - timedelta(minutes=1),
        window_end=START + timedelta(hours=1),
        cutoff_at=START + timedelta(minutes=50),
        timezone="UTC",
        status="on-time",
        schedule=schedule,
    )
    calls: list[datetime] = []

    def claim_due(store: Store, now: datetime) -> Sequence[Occurrence]:
        calls.append(now)
        return [occurrence] if len(calls) == 1 else []  # claimed once

    executor = make_executor(home, fleet, claim_due=claim_due)
    executor.start()
    try:
        executor.tick()
        with Store(home / "patchpilot.db") as store:
            [run] = store.list_runs()
        done = executor.wait(run.run_id, timeout=90)
    finally:
        assert executor.stop()
    assert done is not None
    assert done.status == "completed", done.summary
    assert done.params["trigger"] == "schedule"
    assert done.params["schedule_id"] == schedule.id
    assert done.params["requested_by"] == "sam"
    assert installed(fleet) == dict.fromkeys(fleet, "1.1.0")


def test_a_security_schedule_queues_a_security_only_run(home: Path) -> None:
    write_policy(home)
    schedule = Schedule.create(
        ScheduleSpec(kind="run", cron="0 10 * * *", security=True),
        actor="sam",
        at=START - timedelta(days=1),
    )
    occurrence = Occurrence(
        schedule_id=schedule.id,
        kind="run",
        at=START,
        window_end=START + timedelta(hours=1),
        cutoff_at=START + timedelta(minutes=50),
        timezone="UTC",
        status="on-time",
        schedule=schedule,
    )
    executor = make_executor(home, make_fleet(), claim_due=lambda store, now: [occurrence])
    try:
        executor.tick(START)  # not started: the run stays queued
        with Store(home / "patchpilot.db") as store:
            [run] = store.list_runs()
            [job] = store.jobs(run_id=run.run_id)
    finally:
        executor.stop()
    assert run.params["trigger"] == "schedule"
    assert run.params["security_only"] is True
    assert RunRequest.model_validate(job.request["request"]).security_only


# --------------------------------------------------------------------------- crash recovery

_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.unit.test_executor import child_main
child_main(Path({home!r}))
"""


def child_main(home: Path) -> None:
    """In a child process: an executor on the persisted fakes, driving one run."""
    h = PersistedHarness(home)
    executor = make_executor(home, h.fleet, workers=1)
    executor.start()
    run_id = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
    executor.wait(run_id, timeout=120)
    executor.stop()


def test_an_executor_killed_mid_rollout_is_finished_by_the_next_one_without_patching_twice(
    home: Path,
) -> None:
    write_policy(home, approvals={"tags": []})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHPILOT_")}
    # the broad ring is db-1 then web-1: killed right after the second host's install
    env |= {"PATCHPILOT_HOME": str(home), "PATCHPILOT_FAILPOINTS": "deploy.after_install#2"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD.format(repo=str(REPO), home=str(home))],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    h = PersistedHarness(home)  # fresh fakes, installed versions from the files
    assert sorted(h.install_log()) == ["canary-1 1.1.0", "db-1 1.1.0"]
    with Store(home / "patchpilot.db") as store:
        [run] = store.list_runs()
        assert run.status == "running"
        [job] = store.jobs(run_id=run.run_id)
        assert job.status == "claimed"  # by the dead executor

    executor = make_executor(home, h.fleet)
    assert executor.start() == [run.run_id]
    try:
        done = executor.wait(run.run_id, timeout=120)
    finally:
        assert executor.stop()
    assert done is not None
    assert done.status == "completed", done.summary
    assert sorted(h.install_log()) == ["canary-1 1.1.0", "db-1 1.1.0", "web-1 1.1.0"]
    assert installed(h.fleet) == dict.fromkeys(h.fleet, "1.1.0")
    with Store(home / "patchpilot.db") as store:
        jobs = store.jobs(run_id=run.run_id)
    assert [j.status for j in jobs] == ["done"]
    assert jobs[0].owner == executor.owner


def test_a_request_with_unknown_fields_or_bad_items_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        RunRequest.model_validate({"only": ["acme-web=1.1.0"], "limit": "all", "path": "/etc"})
    with pytest.raises(ValidationError):
        RunRequest.model_validate({"only": ["acme-web; rm -rf /"]})
    with pytest.raises(ValidationError):
        RunRequest.model_validate({"limit": "web-1\n"})
    request = RunRequest.model_validate({"only": ["acme-web=1.1.0", "openssl"], "limit": "all"})
    assert request.only_items() == [("acme-web", "1.1.0"), ("openssl", None)]


def test_an_expired_approval_is_swept_and_its_run_ends_rejected(home: Path) -> None:
    write_policy(home)  # the approval expires 24 h after the request (the run's clock: START)
    fleet = make_fleet()
    executor = make_executor(home, fleet)
    executor.start()
    try:
        run_id = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
        waiting = executor.wait(run_id, timeout=90)
        assert waiting is not None
        assert waiting.status == "awaiting_approval"
        executor.tick(START + timedelta(hours=25))
        done = executor.wait(run_id, timeout=90)
    finally:
        assert executor.stop()
    assert done is not None
    assert done.status == "rejected", done.summary
    assert installed(fleet) == dict.fromkeys(fleet, "1.0.0")
    with Store(home / "patchpilot.db") as store:
        record = store.approval(run_id)
    assert record is not None
    assert record.status == "expired"


def test_concurrent_claimers_take_each_job_exactly_once(home: Path) -> None:
    import threading

    with Store(home / "patchpilot.db") as store:
        ids = [f"run-{i:02d}" for i in range(30)]
        for run_id in ids:
            store.enqueue_run(
                run_id,
                kind="scan",
                target="all",
                hosts=["web-1"],
                params={},
                request={},
                actor="olivia",
            )
        claimed: list[str] = []
        lock = threading.Lock()

        def claimer(owner: str) -> None:
            while (job := store.claim_job(owner)) is not None:
                with lock:
                    claimed.append(job.run_id)

        threads = [threading.Thread(target=claimer, args=(f"1-{i:012x}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(claimed) == ids
        assert not store.enqueue_continue("run-00", actor="x", reason="again")  # one active job


def test_a_run_waiting_for_its_window_is_continued_once_the_window_opens(home: Path) -> None:
    window = {"name": "nightly", "cron": "0 22 * * *", "duration": "PT4H", "cutoff": "PT1H"}
    write_policy(home, approvals={"tags": []}, schedule={"windows": [window], "always_open": False})
    fleet = make_fleet()
    clock = Clock()
    executor = make_executor(home, fleet, clock=clock)
    executor.start()
    try:
        run_id = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
        waiting = executor.wait(run_id, timeout=90)
        assert waiting is not None
        assert waiting.status == "waiting_window"
        clock.now = START.replace(hour=21)  # still closed: not continued
        executor.tick()
        with Store(home / "patchpilot.db") as store:
            assert store.active_job(run_id) is None
        clock.now = START.replace(hour=22, minute=5)
        executor.tick()
        done = executor.wait(run_id, timeout=90)
    finally:
        assert executor.stop()
    assert done is not None
    assert done.status == "completed", done.summary
    assert installed(fleet) == dict.fromkeys(fleet, "1.1.0")


class Recording(Notifier):
    """A notifier without channels that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__(NotificationSettings())
        self.events: list[Event] = []

    def emit(self, event: Event) -> bool:
        self.events.append(event)
        return True


def test_run_events_go_to_the_notifier_after_each_job(home: Path) -> None:
    write_policy(home)  # waits for approval, then expires
    notifier = Recording()
    executor = make_executor(home, make_fleet())
    executor.notifier = notifier
    executor.start()
    try:
        run_id = executor.submit_run(RunRequest(only=ONLY), actor="olivia")
        waiting = executor.wait(run_id, timeout=90)
        assert waiting is not None
        assert waiting.status == "awaiting_approval"
        assert [(e.kind, e.run_id) for e in notifier.events] == [("awaiting-approval", run_id)]
        executor.tick(START + timedelta(hours=25))
        done = executor.wait(run_id, timeout=90)
    finally:
        assert executor.stop()
    assert done is not None
    assert done.status == "rejected"
    assert [e.kind for e in notifier.events] == ["awaiting-approval", "approval-expired"]


def test_the_tick_announces_each_sla_breach_once(home: Path) -> None:
    from patchpilot.core.models import Severity
    from tests.unit.test_compliance_history import finding, scan

    write_policy(home)
    first_seen = START - timedelta(days=6)  # a critical finding: due 7 days after first seen
    with Store(home / "patchpilot.db") as store:
        scan(
            store, first_seen, {"web-1": [finding("web-1", "openssl", severity=Severity.CRITICAL)]}
        )
    executor = make_executor(home, make_fleet())
    executor.notifier = notifier = Recording()
    executor.tick(START)  # not due yet
    assert notifier.events == []
    late = START + timedelta(days=2, hours=2)  # the day after the due day
    executor.tick(late)
    executor.tick(late + timedelta(minutes=5))  # announced already: not again
    assert [(e.kind, "web-1" in e.title) for e in notifier.events] == [("sla-breached", True)]

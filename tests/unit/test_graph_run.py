"""The patch-run graph, whole, on scripted Debian hosts: no lab, no sshd, a few seconds.

Real graph (``graphs/run.py``), real SQLite store and checkpointer, real policy and planning,
testing and deployment agents; hosts are :class:`tests.fakes.FakeDebianHost` (a dpkg database,
a local repository offering acme-web 1.0.0, 1.1.0 and a broken 1.2.0, a health check) reached
through ``RunContext.transport_factory``; the clock is the context's ``clock``; the LLM, where
one is involved, is the local OpenAI-compatible test server (tests/llm_server.py). The lab
end-to-end tests (tests/integration/test_run.py) prove the same flows on real Debian hosts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from patchpilot.core.audit import read_events
from patchpilot.core.models import Host
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store
from patchpilot.graphs.run import (
    ApprovalDecision,
    ApprovalRequest,
    RunContext,
    RunResult,
    WindowWait,
    continue_run,
    load_run_state,
    parse_interrupt,
    start_run,
)
from tests.fakes import HEALTH_ARGV, FakeDebianHost, fleet_factory

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
ACME = ("1.0.0", "1.1.0", "1.2.0")

HOSTS = [
    Host(name="canary-1", address="127.0.0.1", tags=["web", "staging", "canary"], criticality=2),
    Host(name="web-1", address="127.0.0.1", tags=["web", "prod"], criticality=4),
    Host(name="db-1", address="127.0.0.1", tags=["db", "prod"], criticality=5),
]


class Clock:
    """A controllable clock (``RunContext.clock``)."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_fleet(**per_host: dict[str, Any]) -> dict[str, FakeDebianHost]:
    """canary-1, web-1, db-1 with acme-web 1.0.0 installed (``per_host`` overrides)."""
    return {
        h.name: FakeDebianHost(
            h.name,
            {"acme-web": "1.0.0", "base-files": "12.4+deb12u11"},
            {"acme-web": ACME},
            **per_host.get(h.name, {}),
        )
        for h in HOSTS
    }


def write_policy(home: Path, **changes: Any) -> Path:
    """The shipped policy with a health check on acme-web and ``changes`` (top-level keys
    merged one level deep), written under ``home``."""
    data = yaml.safe_load((REPO / "configs" / "policy.yaml").read_text())
    data["health"] = {
        "checks": [
            {
                "name": "acme-web",
                "check": {"kind": "command", "argv": list(HEALTH_ARGV), "interval_s": 0},
            }
        ]
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = home / "policy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


class Harness:
    """One run's world: settings under a temp HOME, the fake fleet, a clock, the policy."""

    def __init__(self, home: Path, fleet: dict[str, FakeDebianHost], policy: Policy) -> None:
        self.settings = Settings(home=home)
        self.fleet = fleet
        self.policy = policy
        self.clock = Clock()

    def context(self, store: Store, **extra: Any) -> RunContext:
        return RunContext(
            settings=self.settings,
            store=store,
            policy=self.policy,
            transport_factory=fleet_factory(self.fleet),
            clock=self.clock,
            **extra,
        )

    def start(self, only: str = "acme-web=1.1.0", **kwargs: Any) -> RunResult:
        name, _, version = only.partition("=")
        with Store(self.settings.store_path) as store:
            return start_run(
                HOSTS,
                self.context(store),
                target="all",
                policy=self.policy,
                only=[(name, version or None)],
                **kwargs,
            )

    def resume(self, run_id: str, decision: ApprovalDecision | None = None) -> RunResult:
        with Store(self.settings.store_path) as store:
            return continue_run(run_id, self.context(store), decision=decision)

    def decide(self, result: RunResult, status: str, by: str = "alice") -> ApprovalDecision:
        assert result.interrupt is not None
        return ApprovalDecision(
            status=status,
            by=by,
            at=self.clock.now,
            content_hash=result.interrupt["content_hash"],
        )

    def installed(self) -> dict[str, str]:
        return {n: h.installed["acme-web"] for n, h in self.fleet.items()}


@pytest.fixture(autouse=True)
def plain_tracebacks() -> Iterator[None]:
    """Log tracebacks as plain text: the default console renderer draws them with rich and
    their locals (~5 s per failed step here, for nothing a test reads)."""
    import structlog

    config = structlog.get_config()
    processors = list(config["processors"])
    renderer = processors[-1]
    if isinstance(renderer, structlog.dev.ConsoleRenderer):
        processors[-1] = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    structlog.configure(processors=processors)
    try:
        yield
    finally:
        structlog.configure(processors=config["processors"])


@pytest.fixture
def harness(tmp_path: Path) -> Callable[..., Harness]:
    def make(fleet: dict[str, FakeDebianHost] | None = None, **policy: Any) -> Harness:
        home = tmp_path / "home"
        return Harness(home, fleet or make_fleet(), load_policy(write_policy(home, **policy)))

    return make


# --------------------------------------------------------------------------- approval


def test_a_run_stops_for_approval_with_a_typed_request_and_deploys_in_rings_once_approved(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    waiting = h.start()
    assert waiting.status == "awaiting_approval"
    assert waiting.waiting == "approval"
    assert waiting.interrupt is not None
    assert waiting.interrupt["kind"] == "approval"
    request = parse_interrupt(waiting.interrupt)
    assert isinstance(request, ApprovalRequest)
    assert {(i.host, i.to) for i in request.items} == {(n, "1.1.0") for n in h.fleet}
    assert [r.name for r in request.rings] == ["canary", "early", "broad"]
    assert h.installed() == dict.fromkeys(h.fleet, "1.0.0")  # nothing before the approval
    # the checkpoint holds the model, the snapshot its JSON
    snapshot = load_run_state(waiting.run_id, h.settings)
    assert snapshot is not None
    assert snapshot.interrupts == (waiting.interrupt,)

    done = h.resume(waiting.run_id, h.decide(waiting, "approved"))
    assert done.status == "completed", done.reason
    assert h.installed() == dict.fromkeys(h.fleet, "1.1.0")
    assert all(len(f.installs) == 1 for f in h.fleet.values())  # each host patched once
    with Store(h.settings.store_path) as store:
        run = store.get_run(waiting.run_id)
        assert run is not None
        assert run.status == "completed"
        assert run.summary is not None
        rings = [r["ring"] for r in run.summary["rings"]]
    assert rings == ["canary", "early", "broad"]


def test_a_rejected_run_changes_nothing(harness: Callable[..., Harness]) -> None:
    h = harness()
    waiting = h.start()
    done = h.resume(waiting.run_id, h.decide(waiting, "rejected", by="bob"))
    assert done.status == "rejected"
    assert done.reason == "rejected by bob"
    assert h.installed() == dict.fromkeys(h.fleet, "1.0.0")
    assert not any(f.installs for f in h.fleet.values())


def test_a_100kb_rejection_comment_ends_the_run_rejected_with_a_clipped_reason(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    waiting = h.start()
    decision = h.decide(waiting, "rejected", by="bob").model_copy(
        update={"comment": "no " * 35_000}
    )
    done = h.resume(waiting.run_id, decision)
    assert done.status == "rejected"
    assert (done.reason or "").startswith("rejected by bob: no no")
    assert len(done.reason or "") < 2100
    assert not any(f.installs for f in h.fleet.values())


def test_an_expired_approval_ends_the_run_rejected(harness: Callable[..., Harness]) -> None:
    h = harness()
    waiting = h.start()
    h.clock.now += timedelta(hours=25)
    done = h.resume(waiting.run_id, h.decide(waiting, "expired", by="patchpilot"))
    assert done.status == "rejected"
    assert "expired" in (done.reason or "")
    assert not any(f.installs for f in h.fleet.values())


def test_a_decision_for_another_plan_is_a_rejection(harness: Callable[..., Harness]) -> None:
    h = harness()
    waiting = h.start()
    stale = h.decide(waiting, "approved").model_copy(update={"content_hash": "0" * 64})
    done = h.resume(waiting.run_id, stale)
    assert done.status == "rejected"
    assert "another plan" in (done.reason or "")
    assert not any(f.installs for f in h.fleet.values())


def test_a_resume_value_that_is_not_a_decision_is_refused(
    harness: Callable[..., Harness],
) -> None:
    from langgraph.types import Command

    from patchpilot.graphs.run import _drive

    h = harness()
    waiting = h.start()
    with Store(h.settings.store_path) as store:
        result = _drive(waiting.run_id, h.context(store), Command(resume={"status": "maybe"}))
    assert result.status == "failed"
    assert "ValidationError" in (result.reason or "")
    assert not any(f.installs for f in h.fleet.values())


# --------------------------------------------------------------------------- halt, rollback


def test_a_broken_release_fails_the_canary_is_rolled_back_and_the_rollout_halts(
    harness: Callable[..., Harness],
) -> None:
    h = harness(approvals={"tags": []})  # no approval: straight to the rings
    done = h.start("acme-web=1.2.0")
    assert done.status == "halted", done.reason
    assert "ring canary halted" in (done.reason or "")
    assert h.installed() == {"canary-1": "1.0.0", "web-1": "1.0.0", "db-1": "1.0.0"}
    assert h.fleet["canary-1"].installs  # installed, then rolled back
    assert not h.fleet["web-1"].installs
    assert not h.fleet["db-1"].installs
    with Store(h.settings.store_path) as store:
        assert [r.spec for r in store.active_rejections()] == ["acme-web=1.2.0"]
    # the rejected version is left out of the next run's plan
    again = h.start("acme-web=1.2.0")
    assert again.status == "completed"
    assert "nothing to deploy" in (again.reason or "")


def test_a_host_unhealthy_before_its_change_is_not_patched(
    harness: Callable[..., Harness],
) -> None:
    fleet = make_fleet()
    fleet["canary-1"].broken = frozenset({"1.0.0", "1.2.0"})  # unhealthy already
    h = harness(fleet, approvals={"tags": []})
    done = h.start()
    assert not h.fleet["canary-1"].installs
    with Store(h.settings.store_path) as store:
        run = store.get_run(done.run_id)
        assert run is not None
        assert run.summary is not None
        statuses = {k: v for r in run.summary["rings"] for k, v in r["statuses"].items()}
    assert statuses["canary-1"] == "skipped"
    assert h.fleet["web-1"].installed["acme-web"] == "1.1.0"


def test_some_hosts_not_reached_the_others_deploy_and_the_run_is_partial(
    harness: Callable[..., Harness],
) -> None:
    fleet = make_fleet(**{"db-1": {"unreachable": True}})
    h = harness(fleet, approvals={"tags": []})
    done = h.start()
    assert done.status == "partial", done.reason
    assert "db-1" in (done.reason or "")
    assert h.fleet["canary-1"].installed["acme-web"] == "1.1.0"
    assert h.fleet["web-1"].installed["acme-web"] == "1.1.0"


def test_a_changed_host_key_is_a_failure_of_the_run(harness: Callable[..., Harness]) -> None:
    fleet = make_fleet(**{"web-1": {"host_key_changed": True}})
    h = harness(fleet, approvals={"tags": []})
    done = h.start()
    assert done.status == "partial", done.reason
    assert "does not match known_hosts" in (done.reason or "")
    assert not h.fleet["web-1"].installs


def test_no_host_reached_fails_the_run(harness: Callable[..., Harness]) -> None:
    fleet = make_fleet(**{h.name: {"unreachable": True} for h in HOSTS})
    h = harness(fleet)
    done = h.start()
    assert done.status == "failed"
    assert "none of the 3" in (done.reason or "")


def test_a_held_package_is_left_out_of_the_plan_with_its_reason(
    harness: Callable[..., Harness],
) -> None:
    fleet = make_fleet(**{"web-1": {"held": frozenset({"acme-web"})}})
    h = harness(fleet)
    waiting = h.start()
    assert waiting.status == "awaiting_approval", waiting.reason
    request = parse_interrupt(waiting.interrupt)
    assert isinstance(request, ApprovalRequest)
    assert "web-1" not in {i.host for i in request.items}  # apt never offers a held package
    snapshot = load_run_state(waiting.run_id, h.settings)
    assert snapshot is not None
    assert snapshot.state.plan is not None
    held = [e for e in snapshot.state.plan.excluded if e.host == "web-1"]
    assert held
    assert "held on web-1" in held[0].reason


def test_error_threshold_zero_starts_no_host_after_the_first_failure(
    harness: Callable[..., Harness],
) -> None:
    broken = {"install_error": "broken by the test"}
    fleet = make_fleet(**{"canary-1": broken, "db-1": broken})
    h = harness(
        fleet,
        approvals={"tags": []},
        schedule={
            "rings": [{"name": "all"}],
            "waves": [3],
            "rate": {"max_concurrency": 3, "max_errors": 0},
        },
    )
    done = h.start()
    assert done.status == "halted", done.reason
    assert "error threshold exceeded: 1 failed, 0 allowed" in (done.reason or "")
    started = [
        e.host
        for e in read_events(h.settings.home / "audit.log", run_id=done.run_id)
        if e.action == "deploy.started"
    ]
    assert started == ["canary-1"]
    assert not h.fleet["db-1"].installs
    assert not h.fleet["web-1"].installs


def test_a_predicted_removal_is_never_deployed_without_approval(
    harness: Callable[..., Harness],
) -> None:
    fleet = make_fleet()
    for host in fleet.values():
        host.installed |= {"acme-agent": "1.0.0", "acme-plugin-legacy": "1.0.0"}
        host.available["acme-agent"] = ["1.0.0", "2.0.0"]
        host.removes = {"acme-agent": ["acme-plugin-legacy"]}
    h = harness(fleet, approvals={"tags": []})
    waiting = h.start("acme-agent")
    assert waiting.status == "awaiting_approval", waiting.reason
    assert any("predicts package removals" in r for r in (waiting.reason or "").split("; ")), (
        waiting.reason
    )
    request = parse_interrupt(waiting.interrupt)
    assert isinstance(request, ApprovalRequest)
    assert {(i.to, i.test) for i in request.items} == {("2.0.0", "blocked")}
    assert all("removals" in (i.classifications or []) for i in request.items)
    done = h.resume(waiting.run_id, h.decide(waiting, "rejected"))
    assert done.status == "rejected"
    assert not any(f.installs for f in h.fleet.values())
    assert all(f.installed["acme-plugin-legacy"] == "1.0.0" for f in h.fleet.values())


def test_a_dry_run_changes_nothing_runs_no_health_check_and_asks_no_approval(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    done = h.start(dry_run=True)
    assert done.status == "completed", done.reason
    assert not any(f.installs for f in h.fleet.values())
    assert not any(f.health_checks for f in h.fleet.values())
    actions = [e.action for e in read_events(h.settings.home / "audit.log", run_id=done.run_id)]
    assert actions.count("health.not_run") == 3
    assert not {"health.passed", "health.failed", "approval.requested"} & set(actions)
    with Store(h.settings.store_path) as store:
        assert store.approval(done.run_id) is None
        items = [i for r in store.deployments(done.run_id) for i in (r.result or {})["items"]]
    assert len(items) == 3
    for item in items:
        assert item["status"] == "pending"
        assert item["reason"].startswith("dry run: would install 1.1.0 (installed: 1.0.0)")
        assert item["reason"].endswith(
            "; health checks not run (dry run), would check: command `acme-health --port 8081` "
            "exits 0"
        )


# --------------------------------------------------------------------------- the window


def test_outside_the_window_the_run_waits_and_resume_deploys_once_it_opens(
    harness: Callable[..., Harness],
) -> None:
    window = {"name": "nightly", "cron": "0 22 * * *", "duration": "PT4H", "cutoff": "PT1H"}
    h = harness(approvals={"tags": []}, schedule={"windows": [window], "always_open": False})
    first = h.start()
    assert first.status == "halted", first.reason
    assert first.waiting == "window"
    assert isinstance(parse_interrupt(first.interrupt), WindowWait)
    assert "opens at" in (first.reason or "")
    # still closed: waits again, nothing deployed
    h.clock.now = START.replace(hour=21)
    again = h.resume(first.run_id)
    assert again.waiting == "window"
    assert not any(f.installs for f in h.fleet.values())
    # open: deploys every ring
    h.clock.now = START.replace(hour=22, minute=5)
    done = h.resume(first.run_id)
    assert done.status == "completed", done.reason
    assert h.installed() == dict.fromkeys(h.fleet, "1.1.0")


def test_no_host_starts_after_the_cutoff(harness: Callable[..., Harness]) -> None:
    window = {"name": "nightly", "cron": "0 22 * * *", "duration": "PT4H", "cutoff": "PT1H"}
    h = harness(approvals={"tags": []}, schedule={"windows": [window], "always_open": False})
    # 22:00 + 4h with a 1h cutoff: 01:30 is inside the window but past its last start (01:00)
    h.clock.now = datetime(2026, 12, 7, 1, 30, tzinfo=UTC)
    first = h.start()
    assert first.status == "halted", first.reason
    assert first.waiting == "window"
    # this window's last start has passed: the run waits for the next one
    assert "opens at 2026-12-07T22:00:00" in (first.reason or "")
    assert not any(f.installs for f in h.fleet.values())


class TickingClock(Clock):
    """A clock that moves ``step`` forward every time it is read."""

    def __init__(self, now: datetime, step: timedelta) -> None:
        super().__init__(now)
        self.step = step

    def __call__(self) -> datetime:
        now = self.now
        self.now += self.step
        return now


def test_the_cutoff_passing_mid_ring_starts_no_new_host(harness: Callable[..., Harness]) -> None:
    window = {"name": "nightly", "cron": "0 22 * * *", "duration": "PT4H", "cutoff": "PT1H"}
    h = harness(
        approvals={"tags": []},
        schedule={"windows": [window], "always_open": False, "rings": [{"name": "all"}]},
    )
    # 00:40, and every reading of the clock is 5 minutes later: the last start (01:00) passes
    # while the ring is being deployed
    h.clock = TickingClock(datetime(2026, 12, 7, 0, 40, tzinfo=UTC), timedelta(minutes=5))
    first = h.start()
    installed = [n for n, f in h.fleet.items() if f.installs]
    assert 0 < len(installed) < len(h.fleet), first.reason
    assert first.status == "halted"
    assert (first.reason or "").startswith("ring all halted: outside the maintenance window")


# --------------------------------------------------------------------------- --only by source name

ZLIB = ("1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1")


def zlib_fleet() -> dict[str, FakeDebianHost]:
    """The fleet with zlib1g (binary of source zlib) pending from bookworm-security."""
    fleet = make_fleet()
    for host in fleet.values():
        host.installed["zlib1g"] = ZLIB[0]
        host.available["zlib1g"] = list(ZLIB)
        host.security = frozenset({"zlib1g"})
        host.sources = {"zlib1g": "zlib"}
    return fleet


def document_of(h: Harness, result: RunResult) -> dict[str, Any]:
    from patchpilot.graphs.run_document import run_document

    with Store(h.settings.store_path) as store:
        return run_document(
            result,
            load_run_state(result.run_id, h.settings),
            store.deployments(result.run_id),
            store.approval(result.run_id),
        )


def test_only_a_source_name_plans_its_binaries_on_every_host(
    harness: Callable[..., Harness],
) -> None:
    h = harness(zlib_fleet(), approvals={"tags": []})
    done = h.start("zlib")
    assert done.status == "completed", done.reason
    snapshot = load_run_state(done.run_id, h.settings)
    assert snapshot is not None
    plan = snapshot.state.plan
    assert plan is not None
    assert {(i.host, i.package, i.source_package, i.to_version) for i in plan.items} == {
        (n, "zlib1g", "zlib", ZLIB[1]) for n in h.fleet
    }
    assert plan.unmatched_only == ()
    assert all(f.installed["zlib1g"] == ZLIB[1] for f in h.fleet.values())
    assert all(f.installed["acme-web"] == "1.0.0" for f in h.fleet.values())  # not named


def test_a_name_that_matches_nothing_ends_with_a_question_never_completed(
    harness: Callable[..., Harness],
) -> None:
    h = harness(zlib_fleet(), approvals={"tags": []})
    miss = h.start("zlibc")
    assert miss.status == "failed"
    question = "no pending update matches zlibc: zlib is the source of zlib1g: patch zlib1g?"
    assert question in (miss.reason or "")
    doc = document_of(h, miss)
    assert doc["plan"]["unmatched_only"] == ["zlibc"]
    assert doc["plan"]["suggestions"] == {"zlibc": question}
    assert doc["hint"] == f"--only matched nothing: {question}"
    assert not any(f.installs for f in h.fleet.values())
    # a name installed everywhere with nothing pending is up to date: completed, and said so
    current = h.start("base-files")
    assert current.status == "completed", current.reason
    assert "base-files has no pending update: installed and up to date on" in (current.reason or "")
    assert document_of(h, current)["plan"]["up_to_date"] == ["base-files"]


# --------------------------------------------------------------------------- not before


def test_a_run_with_a_not_before_time_waits_and_continues_once_it_has_come(
    harness: Callable[..., Harness],
) -> None:
    h = harness(approvals={"tags": []})  # the shipped policy: always open, UTC
    tonight = START.replace(hour=20)
    first = h.start(not_before=tonight)
    assert first.status == "halted", first.reason
    assert first.waiting == "window"
    wait = parse_interrupt(first.interrupt)
    assert isinstance(wait, WindowWait)
    assert wait.not_before == tonight
    assert first.reason == "not before Mon 2026-12-07 20:00 UTC (asked for)"
    doc = document_of(h, first)
    assert doc["not_before"] == tonight.isoformat()
    assert doc["hint"] == (
        f"continue with `patchpilot resume {first.run_id}` once it is "
        "2026-12-07T20:00:00Z or later (and the window is open)"
    )
    assert {d["status"] for d in doc["deployments"]} == {"pending"}
    # still before it: waits again, nothing deployed
    h.clock.now = tonight - timedelta(minutes=1)
    again = h.resume(first.run_id)
    assert again.waiting == "window"
    assert not any(f.installs for f in h.fleet.values())
    # the time has come: deploys every ring
    h.clock.now = tonight
    done = h.resume(first.run_id)
    assert done.status == "completed", done.reason
    assert h.installed() == dict.fromkeys(h.fleet, "1.1.0")


def test_not_before_and_the_window_the_later_of_the_two_wins(
    harness: Callable[..., Harness],
) -> None:
    window = {
        "name": "nightly",
        "cron": "0 22 * * *",
        "duration": "PT4H",
        "cutoff": "PT1H",
        "timezone": "Europe/Berlin",
    }
    h = harness(approvals={"tags": []}, schedule={"windows": [window], "always_open": False})
    # 03:00 Berlin tomorrow: after that night's last start (01:00), so the next window is
    # tomorrow 22:00 Berlin
    not_before = datetime(2026, 12, 8, 2, 0, tzinfo=UTC)
    first = h.start(not_before=not_before)
    assert first.waiting == "window", first.reason
    assert first.reason == (
        "not before Tue 2026-12-08 03:00 Europe/Berlin (asked for); then the maintenance "
        "window nightly opens at Tue 2026-12-08 22:00 Europe/Berlin"
    )
    # tonight's window is open, but the not-before time has not come
    h.clock.now = datetime(2026, 12, 7, 21, 30, tzinfo=UTC)  # 22:30 Berlin
    assert h.resume(first.run_id).waiting == "window"
    # the not-before time has come, the window is closed
    h.clock.now = not_before + timedelta(hours=1)
    closed = h.resume(first.run_id)
    assert closed.waiting == "window"
    assert "outside the maintenance window" in (closed.reason or "")
    assert "not_before" not in (closed.interrupt or {})
    assert not any(f.installs for f in h.fleet.values())
    # both: deploys
    h.clock.now = datetime(2026, 12, 8, 21, 5, tzinfo=UTC)  # 22:05 Berlin
    done = h.resume(first.run_id)
    assert done.status == "completed", done.reason
    assert h.installed() == dict.fromkeys(h.fleet, "1.1.0")


@pytest.mark.parametrize(
    ("failpoint", "step"), [("run.after_ring:raise", "deploy_ring"), ("run.finish:raise", "finish")]
)
def test_an_error_after_the_deployment_fails_the_run_and_resume_finishes_it(
    harness: Callable[..., Harness],
    monkeypatch: pytest.MonkeyPatch,
    failpoint: str,
    step: str,
) -> None:
    h = harness(approvals={"tags": []})
    monkeypatch.setenv("PATCHPILOT_FAILPOINTS", failpoint)
    failed = h.start()
    assert failed.status == "failed"
    assert (failed.reason or "").startswith(f"{step} failed: FailpointError: failpoint ")
    assert h.fleet["canary-1"].installed["acme-web"] == "1.1.0"  # the deployment happened
    with Store(h.settings.store_path) as store:
        run = store.get_run(failed.run_id)
        assert run is not None
        assert run.status == "failed"  # never "running"
    events = read_events(h.settings.home / "audit.log", run_id=failed.run_id)
    assert "run.failed" in [e.action for e in events]
    monkeypatch.delenv("PATCHPILOT_FAILPOINTS")
    done = h.resume(failed.run_id)
    assert done.status == "completed", done.reason
    assert all(len(f.installs) == 1 for f in h.fleet.values())  # nothing deployed twice
    events = read_events(h.settings.home / "audit.log", run_id=failed.run_id)
    started = [e.host for e in events if e.action == "deploy.started"]
    assert sorted(started) == sorted(h.fleet)


# --------------------------------------------------------------------------- crash and resume
#
# A child process drives the run on fakes whose installed versions live in files (so they
# survive the kill), dies by SIGKILL at a failpoint (patchpilot/core/failpoints.py), and the
# test process resumes it from the checkpoint.

_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.unit.test_graph_run import child_main
child_main(Path({home!r}), {run_id!r}, {decision!r}, {llm!r})
"""


def child_main(home: Path, run_id: str, decision: str | None, llm: str | None) -> None:
    """In a child process: start the run (or decide it) on the persisted fakes."""
    h = PersistedHarness(home, llm=llm)
    if decision is None:
        h.start(run_id=run_id)
    else:
        h.resume(run_id, ApprovalDecision.model_validate_json(decision))


class PersistedHarness(Harness):
    """A harness whose fake hosts' installed versions live in files (to survive kill -9), with
    an optional LLM (``llm``: the base URL of tests/llm_server.py's server)."""

    def __init__(self, home: Path, *, llm: str | None = None) -> None:
        super().__init__(home, make_fleet(), load_policy(home / "policy.yaml"))
        for host in self.fleet.values():
            host.installed["openssl"] = "3.0.1-1"
            host.available["openssl"] = ["3.0.1-1", "3.0.2-1"]
            host.security = frozenset({"openssl"})
        self.llm = llm
        state = home / "fleet"
        state.mkdir(parents=True, exist_ok=True)
        for name, host in self.fleet.items():
            path = state / name
            if path.exists():
                host.installed["acme-web"] = path.read_text()
            host.on_install = _saver(path, host)

    def context(self, store: Store, **extra: Any) -> RunContext:
        if self.llm is not None:
            from patchpilot.core.settings import LLMSettings
            from patchpilot.tools.llm import make_client

            settings = LLMSettings(base_url=self.llm, model="test-model", cache=False)
            extra["llm"] = make_client(settings, backoff=0)
        return super().context(store, **extra)

    def install_log(self) -> list[str]:
        path = self.settings.home / "fleet" / "installs.log"
        return path.read_text().splitlines() if path.exists() else []


def _saver(path: Path, host: FakeDebianHost) -> Callable[[], None]:
    def save() -> None:
        path.write_text(host.installed["acme-web"])
        with (path.parent / "installs.log").open("a") as log:
            log.write(f"{host.name} {host.installed['acme-web']}\n")

    return save


def run_child(
    h: PersistedHarness,
    run_id: str,
    *,
    failpoint: str = "",
    decision: ApprovalDecision | None = None,
) -> subprocess.CompletedProcess[str]:
    code = _CHILD.format(
        repo=str(REPO),
        home=str(h.settings.home),
        run_id=run_id,
        decision=None if decision is None else decision.model_dump_json(),
        llm=h.llm,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHPILOT_")}
    env |= {"PATCHPILOT_HOME": str(h.settings.home)}
    if failpoint:
        env["PATCHPILOT_FAILPOINTS"] = failpoint
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def persisted(tmp_path: Path) -> Callable[..., PersistedHarness]:
    def make(*, llm: str | None = None, **policy: Any) -> PersistedHarness:
        home = tmp_path / "home"
        write_policy(home, **policy)
        return PersistedHarness(home, llm=llm)

    return make


def test_a_run_killed_mid_ring_resumes_and_patches_no_host_twice(
    persisted: Callable[..., PersistedHarness],
) -> None:
    h = persisted(approvals={"tags": []})
    # the broad ring is db-1 then web-1 (waves 1, 50%): killed right after the second install
    child = run_child(h, "run-crash", failpoint="deploy.after_install#2")
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert sorted(h.install_log()) == ["canary-1 1.1.0", "db-1 1.1.0"]
    with Store(h.settings.store_path) as store:
        run = store.get_run("run-crash")
        assert run is not None
        assert run.status == "running"

    resumed = PersistedHarness(h.settings.home)  # fresh fakes, state from the files
    done = resumed.resume("run-crash")
    assert done.status == "completed", done.reason
    assert sorted(resumed.install_log()) == ["canary-1 1.1.0", "db-1 1.1.0", "web-1 1.1.0"]
    assert resumed.installed() == dict.fromkeys(resumed.fleet, "1.1.0")


def test_a_run_killed_before_its_result_is_recorded_finishes_on_resume(
    persisted: Callable[..., PersistedHarness],
) -> None:
    h = persisted(approvals={"tags": []})
    child = run_child(h, "run-finish", failpoint="run.finish")
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert len(h.install_log()) == 3
    done = PersistedHarness(h.settings.home).resume("run-finish")
    assert done.status == "completed", done.reason
    assert len(h.install_log()) == 3  # nothing deployed twice


def test_assistance_and_llm_usage_survive_an_approval_from_another_process(
    persisted: Callable[..., PersistedHarness],
) -> None:
    from tests.llm_server import LLMTestServer, answer

    with LLMTestServer(responder=lambda request: answer({"items": []})) as server:
        h = persisted(llm=server.base_url)
        child = run_child(h, "run-llm")  # starts, prioritizes with the LLM, waits for approval
        assert child.returncode == 0, child.stderr[-2000:]
        started_calls = len(server.requests)
        assert started_calls >= 1
        snapshot = load_run_state("run-llm", h.settings)
        assert snapshot is not None
        assert snapshot.interrupts
        waiting = RunResult(
            run_id="run-llm",
            status="awaiting_approval",
            waiting="approval",
            interrupt=snapshot.interrupts[0],
        )
        # approved here, in another process with its own LLM client
        done = h.resume("run-llm", h.decide(waiting, "approved"))
        total_calls = len(server.requests)
    assert done.status == "completed", done.reason
    assert total_calls > started_calls  # this process used the LLM too (the summary)
    with Store(h.settings.store_path) as store:
        run = store.get_run("run-llm")
        assert run is not None
        assert run.summary is not None
        summary = run.summary
    tasks = {a["task"]: a for a in summary["assistance"]}
    assert tasks["prioritization"]["by"] == "llm", summary["assistance"]
    assert {"prioritization", "testing", "run_summary"} <= set(tasks)
    assert summary["llm_usage"]["calls"] == total_calls  # both processes counted

"""patchpilot.agents.deployment on scripted hosts: statuses, rollback decisions, rate-control
halting.

:class:`FakeDebian` answers the commands deployment runs (dpkg-query, apt-get -s, apt-get
install, dpkg --audit, service restart, the reboot flag) from a small in-memory dpkg database;
its health check is a :class:`CommandCheck` (``acme-health``) that fails while a "broken"
version is installed. Outputs follow the ones recorded on the lab (tests/fixtures/facts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from patchpilot.agents.deployment import (
    AnyCheck,
    HostDeployment,
    ItemDeployment,
    RingHooks,
    deploy_host,
    deploy_ring,
    rejected_after_failure,
)
from patchpilot.core.audit import AuditLog
from patchpilot.core.errors import ConfigError, HostConnectError
from patchpilot.core.models import CommandResult, Host
from patchpilot.core.plan import ComplianceState, PlanItem
from patchpilot.core.policy import Policy
from patchpilot.core.schedule import RatePolicy, RebootPolicy, SchedulePolicy
from patchpilot.core.settings import Settings
from patchpilot.tools.health import CommandCheck
from patchpilot.tools.transport import Transport
from tests.fakes import ScriptedTransport

AVAILABLE = {"acme-web": ("1.0.0", "1.1.0", "1.2.0"), "libfoo": ("1.0", "2.0")}
CHECK = CommandCheck(argv=("acme-health",))


def _result(code: int = 0, out: str = "", err: str = "") -> CommandResult:
    return CommandResult(host="", argv=("x",), exit_code=code, stdout=out, stderr=err)


class FakeDebian:
    """A fake dpkg database with a service whose health depends on the installed version."""

    def __init__(
        self,
        versions: dict[str, str],
        *,
        broken: frozenset[str] = frozenset({"1.2.0"}),
        held: frozenset[str] = frozenset(),
        unhealthy: bool = False,
        install_error: str = "",
        rollback_error: str = "",
        reboot: bool = False,
        audit_unpacked: bool = False,
        depends: dict[str, tuple[str, str]] | None = None,
        units: tuple[str, ...] = (),
        stopped: frozenset[str] = frozenset(),
    ) -> None:
        self.versions = dict(versions)
        self.units = units  # systemd units acme-web also ships
        self.stopped = stopped  # services whose status says "not running" (exit 3)
        self.broken = broken
        self.held = held
        self.unhealthy = unhealthy
        self.install_error = install_error
        self.rollback_error = rollback_error
        self.reboot = reboot
        self.unpacked = {"acme-web"} if audit_unpacked else set()
        self.depends = depends or {}
        self.installs: list[tuple[str, ...]] = []
        self.restarts: list[str] = []
        self.health_checks = 0
        self.lock = threading.Lock()

    def __call__(self, argv: tuple[str, ...]) -> CommandResult:
        with self.lock:
            return self._answer(argv)

    def _answer(self, argv: tuple[str, ...]) -> CommandResult:
        if argv[0] == "dpkg-query":
            rows, missing = [], []
            for name in argv[argv.index("--") + 1 :]:
                if name in self.versions:
                    state = "iU " if name in self.unpacked else "ii "
                    rows.append(f"{name}:amd64\t{name}\t{self.versions[name]}\t{state}\n")
                else:
                    missing.append(f"dpkg-query: no packages found matching {name}\n")
            return _result(1 if missing else 0, "".join(rows), "".join(missing))
        if argv == ("dpkg", "--audit"):
            text = " acme-web  acme web service\n" if self.unpacked else ""
            return _result(0, f"packages unpacked but not configured:\n{text}" if text else "")
        if argv[:2] == ("dpkg", "--configure"):
            self.unpacked.clear()
            return _result(0)
        if argv[0] == "apt-get" and "-s" in argv:
            return self._simulate(argv)
        if argv[0] == "apt-get" and "check" in argv:
            return _result(0)
        if argv[0] == "apt-get" and "-f" in argv:
            return _result(0)
        if argv[0] == "apt-get":
            return self._install(argv)
        if argv[0] == "service" and argv[2] == "status":
            return (
                _result(3, f"{argv[1]} is not running") if argv[1] in self.stopped else _result(0)
            )
        if argv[0] == "service":
            self.restarts.append(argv[1])
            return _result(0)
        if argv == CHECK.argv:
            self.health_checks += 1
            bad = self.unhealthy or self.versions.get("acme-web") in self.broken
            return _result(1, "", "HTTP 503") if bad else _result(0, "OK")
        if argv[0] == "sh":
            return self._script(argv)
        return _result(127, "", f"not scripted: {argv}")

    def _script(self, argv: tuple[str, ...]) -> CommandResult:
        script, names = argv[2], argv[4:]
        if "dpkg-query -L" in script:
            out = "".join(
                f"@@package {n}\n"
                + (
                    "/etc/init.d/acme-web\n"
                    + "".join(f"/lib/systemd/system/{u}.service\n" for u in self.units)
                    if n == "acme-web"
                    else ""
                )
                for n in names
            )
            return _result(0, out)
        if "Conffiles" in script:
            return _result(0, "".join(f"{n}\t\n" for n in names) + "@@md5sum\n")
        if "reboot-required" in script:
            return _result(
                0, "reboot-required: yes\nlibfoo\n" if self.reboot else "reboot-required: no\n"
            )
        if "updates" in script:
            return _result(0, "")
        return _result(127, "", "unknown script")

    def _pins(self, argv: tuple[str, ...]) -> list[tuple[str, str]]:
        return [tuple(p.split("=", 1)) for p in argv[argv.index("--") + 1 :]]  # type: ignore[misc]

    def _simulate(self, argv: tuple[str, ...]) -> CommandResult:
        lines = ["Reading package lists...", "Building dependency tree..."]
        inst: list[str] = []
        held: list[str] = []
        up = down = 0
        pins = self._pins(argv)
        for name, ver in pins:
            if ver not in AVAILABLE.get(name, ()):
                return _result(100, "", f"E: Version '{ver}' for '{name}' was not found\n")
        for name, ver in [*pins, *(self.depends.get(v) for _, v in pins if v in self.depends)]:  # type: ignore[misc]
            cur = self.versions.get(name)
            if cur == ver:
                lines.append(f"{name} is already the newest version ({ver}).")
                continue
            if cur is None and "--only-upgrade" in argv:
                lines.append(
                    f"Skipping {name}, it is not installed and only upgrades are requested."
                )
                continue
            if name in self.held:
                held.append(f"   {name} ({cur} => {ver})")
            if cur is not None and AVAILABLE[name].index(ver) < AVAILABLE[name].index(cur):
                down += 1
            else:
                up += 1
            inst.append(f"Inst {name} [{cur}] ({ver} lab:lab [all])")
        if held:
            lines += ["The following held packages will be changed:", *held]
        mid = f"{down} downgraded, " if down else ""
        lines.append(f"{up} upgraded, 0 newly installed, {mid}0 to remove and 0 not upgraded.")
        return _result(0, "\n".join([*lines, *inst]) + "\n")

    def _install(self, argv: tuple[str, ...]) -> CommandResult:
        self.installs.append(argv)
        rollback = "--allow-downgrades" in argv
        error = self.rollback_error if rollback else self.install_error
        if error:
            return _result(100, "", error)
        pins = self._pins(argv)
        if any(name in self.held for name, _ in pins):
            return _result(100, "", "E: Held packages were changed and -y was used\n")
        for name, ver in pins:
            self.versions[name] = ver
        for _, ver in pins:
            if not rollback and ver in self.depends:
                dep, dep_ver = self.depends[ver]
                self.versions[dep] = dep_ver
        return _result(0, "Setting up ...\n")


def _host(name: str = "h1") -> Host:
    return Host(name=name, address="127.0.0.1")


def _item(host: str, version: str, package: str = "acme-web", frm: str = "1.0.0") -> PlanItem:
    return PlanItem(
        host=host, package=package, from_version=frm, to_version=version, rule="t", reason="t"
    )


def _factory(
    fakes: dict[str, FakeDebian], delay: float = 0.0
) -> Callable[[Host, Settings], Transport]:
    def open_fake(host: Host, settings: Settings) -> Transport:
        return ScriptedTransport(fakes[host.name], host.name, delay=delay)

    return open_fake


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def audit(settings: Settings) -> AuditLog:
    return AuditLog.for_settings(settings, run_id="r1", actor="tester")


def _deploy(
    fake: FakeDebian,
    items: list[PlanItem],
    settings: Settings,
    audit: AuditLog,
    *,
    dry_run: bool = False,
    reboot: RebootPolicy = RebootPolicy.NEVER,
    checks: list[AnyCheck] | None = None,
) -> HostDeployment:
    return deploy_host(
        _host(),
        items,
        settings,
        [CHECK] if checks is None else checks,
        dry_run=dry_run,
        reboot_policy=reboot,
        audit=audit,
        transport_factory=_factory({"h1": fake}),
    )


def _only(result: HostDeployment) -> ItemDeployment:
    (item,) = result.items
    return item


def test_only_services_running_before_are_restarted(settings: Settings, audit: AuditLog) -> None:
    # acme-web also ships a oneshot unit (stopped between its timer's runs): restarting it would
    # run it, so it stays stopped; the running service is restarted, also after a rollback
    fake = FakeDebian(
        {"acme-web": "1.0.0"}, units=("acme-web-cleanup",), stopped=frozenset({"acme-web-cleanup"})
    )
    result = _deploy(fake, [_item("h1", "1.1.0")], settings, audit)
    assert result.status == "installed"
    assert fake.restarts == ["acme-web"]
    events = [(e.action, e.details) for e in audit.read_events("r1")]
    assert ("service.not_running", {"service": "acme-web-cleanup"}) in [
        (a, {k: v for k, v in d.items() if k == "service"}) for a, d in events
    ]
    assert [r.service for r in result.restarts] == ["acme-web"]

    broken = FakeDebian(
        {"acme-web": "1.0.0"}, units=("acme-web-cleanup",), stopped=frozenset({"acme-web-cleanup"})
    )
    rolled = _deploy(broken, [_item("h1", "1.2.0")], settings, audit)
    assert rolled.status == "rolled_back"
    assert broken.restarts == ["acme-web", "acme-web"]  # after the install, after the rollback


def test_upgrade_is_installed_verified_and_restarted(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"})
    result = _deploy(fake, [_item("h1", "1.1.0")], settings, audit)
    item = _only(result)
    assert (item.status, item.from_version, item.compliance) == (
        "installed", "1.0.0", ComplianceState.INSTALLED,
    )  # fmt: skip
    assert result.ok
    assert result.status == "installed"
    assert result.pre_versions == {"acme-web": "1.0.0"}
    assert result.post_versions == {"acme-web": "1.1.0"}
    assert fake.restarts == ["acme-web"]
    install = fake.installs[0]
    assert "--no-remove" in install
    assert "--allow-change-held-packages" not in install
    assert "--allow-downgrades" not in install
    actions = [e.action for e in audit.read_events("r1")]
    assert actions[:2] == ["deploy.started", "deploy.simulated"]
    assert "deploy.installed" in actions
    assert actions[-1] == "deploy.finished"


def test_pre_state_includes_the_simulations_extra_changes(
    settings: Settings, audit: AuditLog
) -> None:
    fake = FakeDebian({"acme-web": "1.0.0", "libfoo": "1.0"}, depends={"1.2.0": ("libfoo", "2.0")})
    result = _deploy(fake, [_item("h1", "1.2.0")], settings, audit)
    assert result.pre_versions == {"acme-web": "1.0.0", "libfoo": "1.0"}
    # 1.2.0 is unhealthy: both packages go back to the recorded versions
    assert _only(result).status == "rolled_back"
    assert fake.versions == {"acme-web": "1.0.0", "libfoo": "1.0"}
    rollback = fake.installs[-1]
    assert rollback[-2:] == ("acme-web=1.0.0", "libfoo=1.0")
    assert "--allow-downgrades" in rollback


def test_health_failure_rolls_back_and_rejects_the_version(
    settings: Settings, audit: AuditLog
) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"})
    result = _deploy(fake, [_item("h1", "1.2.0")], settings, audit)
    item = _only(result)
    assert item.status == "rolled_back"
    assert item.cause == "health"
    assert item.compliance is ComplianceState.FAILED
    assert item.reason is not None
    assert "rolled back to acme-web=1.0.0" in item.reason
    assert not result.ok
    assert fake.versions["acme-web"] == "1.0.0"
    assert [c.ok for c in result.health_after] == [False]
    assert [c.ok for c in result.health_after_rollback] == [True]
    assert result.rollback is not None
    assert result.rollback.ok
    assert rejected_after_failure([result]) == [("acme-web", "1.2.0")]
    actions = [e.action for e in audit.read_events()]
    assert actions.index("health.failed") < actions.index("rollback.done")


def test_failed_rollback_reports_both_reasons(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"}, rollback_error="E: Unable to locate package\n")
    item = _only(_deploy(fake, [_item("h1", "1.2.0")], settings, audit))
    assert item.status == "failed"
    assert item.reason is not None
    assert "health check failed" in item.reason
    assert "rollback failed (not-found)" in item.reason
    assert "rollback.failed" in [e.action for e in audit.read_events()]


def test_install_error_that_changed_nothing_is_failed_not_rolled_back(
    settings: Settings, audit: AuditLog
) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"}, install_error="E: Sub-process /usr/bin/dpkg err\n")
    result = _deploy(fake, [_item("h1", "1.1.0")], settings, audit)
    item = _only(result)
    assert (item.status, item.cause) == ("failed", "install")
    assert item.reason is not None
    assert "nothing to roll back" in item.reason
    assert item.compliance is ComplianceState.FAILED
    assert rejected_after_failure([result]) == []
    assert len(fake.installs) == 1


def test_already_at_target_is_a_noop(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.1.0"})
    result = _deploy(fake, [_item("h1", "1.1.0")], settings, audit)
    item = _only(result)
    assert (item.status, item.cause, item.compliance) == (
        "skipped", "at-target", ComplianceState.INSTALLED,
    )  # fmt: skip
    assert result.ok
    assert fake.installs == []
    assert fake.restarts == []


def test_unhealthy_host_is_not_patched(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"}, unhealthy=True)
    result = _deploy(fake, [_item("h1", "1.1.0")], settings, audit)
    item = _only(result)
    assert (item.status, item.cause, item.compliance) == (
        "skipped", "unhealthy-before", ComplianceState.MISSING,
    )  # fmt: skip
    assert fake.installs == []


def test_held_package_is_refused_before_install(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"}, held=frozenset({"acme-web"}))
    item = _only(_deploy(fake, [_item("h1", "1.1.0")], settings, audit))
    assert (item.status, item.cause) == ("failed", "blocked")
    assert item.reason is not None
    assert "held" in item.reason
    assert fake.installs == []


def test_unknown_version_fails_in_simulation(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"})
    item = _only(_deploy(fake, [_item("h1", "9.9")], settings, audit))
    assert (item.status, item.cause) == ("failed", "simulation")
    assert fake.installs == []


def test_dry_run_only_simulates(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"})
    result = _deploy(fake, [_item("h1", "1.2.0")], settings, audit, dry_run=True)
    item = _only(result)
    assert (item.status, item.cause, item.compliance) == (
        "pending", "dry-run", ComplianceState.MISSING,
    )  # fmt: skip
    assert result.dry_run
    assert result.install is None
    assert fake.installs == []
    assert fake.restarts == []
    assert fake.versions == {"acme-web": "1.0.0"}
    # A dry run runs no health check (a check may be a command): it says what it would check.
    assert fake.health_checks == 0
    assert result.health_before == ()
    assert item.reason == (
        "dry run: would install 1.2.0 (installed: 1.0.0); health checks not run (dry run), "
        "would check: command `acme-health` exits 0"
    )
    actions = [e.action for e in audit.read_events("r1")]
    assert "health.not_run" in actions
    assert not {"health.passed", "health.failed"} & set(actions)


def test_dry_run_on_an_unhealthy_host_runs_no_check_either(
    settings: Settings, audit: AuditLog
) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"}, unhealthy=True)
    result = _deploy(fake, [_item("h1", "1.1.0")], settings, audit, dry_run=True)
    assert (_only(result).status, fake.health_checks) == ("pending", 0)


def test_dry_run_does_not_repair_dpkg(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"}, audit_unpacked=True)
    result = _deploy(fake, [_item("h1", "1.1.0")], settings, audit, dry_run=True)
    assert _only(result).status == "pending"
    assert result.repair is None
    assert fake.unpacked == {"acme-web"}


def test_broken_dpkg_is_repaired_first(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"}, audit_unpacked=True)
    result = _deploy(fake, [_item("h1", "1.1.0")], settings, audit)
    assert result.repair is not None
    assert result.repair.ok
    assert _only(result).status == "installed"
    assert "dpkg.repaired" in [e.action for e in audit.read_events()]


@pytest.mark.parametrize(
    ("policy", "phrase"),
    [(RebootPolicy.NEVER, "policy never"), (RebootPolicy.IF_NEEDED, "not implemented")],
)
def test_reboot_required_means_pending_reboot(
    settings: Settings, audit: AuditLog, policy: RebootPolicy, phrase: str
) -> None:
    fake = FakeDebian({"acme-web": "1.0.0"}, reboot=True)
    result = _deploy(fake, [_item("h1", "1.1.0")], settings, audit, reboot=policy)
    item = _only(result)
    assert item.status == "installed"
    assert item.compliance is ComplianceState.INSTALLED_PENDING_REBOOT
    assert result.reboot_required
    assert result.reboot_note is not None
    assert phrase in result.reboot_note


def test_intended_downgrade_passes_allow_downgrades(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.1.0"})
    item = _only(_deploy(fake, [_item("h1", "1.0.0", frm="1.1.0")], settings, audit))
    assert item.status == "installed"
    assert "--allow-downgrades" in fake.installs[0]


def test_newer_than_target_is_skipped(settings: Settings, audit: AuditLog) -> None:
    fake = FakeDebian({"acme-web": "1.2.0"})
    item = _only(_deploy(fake, [_item("h1", "1.1.0")], settings, audit, checks=[]))
    assert (item.status, item.cause) == ("skipped", "newer")


def test_unreachable_host_fails_every_item(settings: Settings, audit: AuditLog) -> None:
    def refuse(host: Host, settings: Settings) -> Transport:
        raise HostConnectError(host.name, "connection refused")

    result = deploy_host(
        _host(), [_item("h1", "1.1.0")], settings, [], dry_run=False,
        reboot_policy=RebootPolicy.NEVER, audit=audit, transport_factory=refuse,
    )  # fmt: skip
    item = _only(result)
    assert (item.status, item.cause) == ("failed", "transport")


def test_items_of_another_host_are_refused(settings: Settings, audit: AuditLog) -> None:
    with pytest.raises(ConfigError, match="got items of"):
        _deploy(FakeDebian({}), [_item("other", "1.1.0")], settings, audit)


# --------------------------------------------------------------------------- rings


def _policy(waves: tuple[int | str, ...], concurrency: int | str, errors: int | str) -> Policy:
    schedule = SchedulePolicy(
        waves=waves, rate=RatePolicy(max_concurrency=concurrency, max_errors=errors)
    )
    return Policy.model_validate(
        {
            "sla_days": {
                "severity": dict.fromkeys(
                    ("critical", "high", "medium", "low", "unimportant", "unknown"), 30
                ),
                "ssvc": {"act": 1, "attend": 7, "track*": 30, "track": 90},
            },
            "schedule": schedule.model_dump(),
        }
    )


class Timeline:
    """Records when each host's deployment starts and ends (by the fake's first/last call)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.lock = threading.Lock()

    def wrap(self, name: str, fake: FakeDebian) -> Callable[[tuple[str, ...]], CommandResult]:
        def respond(argv: tuple[str, ...]) -> CommandResult:
            with self.lock:
                if name not in self.started:
                    self.started.append(name)
            return fake(argv)

        return respond


def _ring(
    fakes: dict[str, FakeDebian],
    version: str,
    policy: Policy,
    settings: Settings,
    audit: AuditLog,
    *,
    timeline: Timeline | None = None,
    delay: float = 0.0,
) -> tuple[object, list[str]]:
    hosts = [_host(name) for name in fakes]
    done: list[str] = []

    def open_fake(host: Host, settings: Settings) -> Transport:
        fake = fakes[host.name]
        respond = timeline.wrap(host.name, fake) if timeline else fake
        return ScriptedTransport(respond, host.name, delay=delay)

    result = deploy_ring(
        hosts,
        {h.name: [_item(h.name, version)] for h in hosts},
        settings,
        policy,
        lambda host: [CHECK],
        dry_run=False,
        audit=audit,
        on_host_done=lambda d: done.append(d.host),
        ring="canary",
        transport_factory=open_fake,
    )
    return result, done


def test_max_errors_zero_stops_dispatching_after_the_first_failure(
    settings: Settings, audit: AuditLog
) -> None:
    fakes = {name: FakeDebian({"acme-web": "1.0.0"}) for name in ("a", "b", "c")}
    timeline = Timeline()
    result, done = _ring(fakes, "1.2.0", _policy((3,), 3, 0), settings, audit, timeline=timeline)
    from patchpilot.agents.deployment import RingResult

    assert isinstance(result, RingResult)
    assert result.halted
    assert result.reason is not None
    assert "health check failed on a" in result.reason
    assert timeline.started == ["a"]  # ramp 1: b and c never start
    assert [h.status for h in result.hosts] == ["rolled_back", "pending", "pending"]
    assert [h.items[0].cause for h in result.hosts[1:]] == ["not-started", "not-started"]
    assert fakes["b"].installs == []
    assert result.reject == [("acme-web", "1.2.0")]
    assert result.errors == 1
    assert done == ["a", "b", "c"]
    actions = [(e.action, e.host) for e in audit.read_events("r1")]
    assert ("ring.halted", None) in actions
    assert ("deploy.started", "b") not in actions


def test_in_flight_hosts_finish_after_a_halt(settings: Settings, audit: AuditLog) -> None:
    # max_errors 1: a (ramp 1) fails -> 1 error allowed; the ramp is 2: b and c run together,
    # both fail; the threshold is exceeded while both are in flight: both finish, d never starts.
    # (Install errors, not health failures: a health failure halts the ring at once.)
    fakes = {
        name: FakeDebian({"acme-web": "1.0.0"}, install_error="E: Sub-process /usr/bin/dpkg")
        for name in ("a", "b", "c", "d")
    }
    timeline = Timeline()
    result, _ = _ring(
        fakes, "1.1.0", _policy((4,), 4, 1), settings, audit, timeline=timeline, delay=0.01
    )
    from patchpilot.agents.deployment import RingResult

    assert isinstance(result, RingResult)
    assert result.halted
    assert sorted(timeline.started) == ["a", "b", "c"]
    assert [h.status for h in result.hosts] == ["failed", "failed", "failed", "pending"]
    assert result.reason is not None
    assert "error threshold exceeded" in result.reason
    assert all(f.versions["acme-web"] == "1.0.0" for f in fakes.values())


def test_a_health_failure_halts_the_ring_whatever_max_errors_allows(
    settings: Settings, audit: AuditLog
) -> None:
    fakes = {name: FakeDebian({"acme-web": "1.0.0"}) for name in ("a", "b", "c")}
    timeline = Timeline()
    result, _ = _ring(fakes, "1.2.0", _policy((3,), 3, 2), settings, audit, timeline=timeline)
    from patchpilot.agents.deployment import RingResult

    assert isinstance(result, RingResult)
    assert result.halted
    assert timeline.started == ["a"]
    assert [h.status for h in result.hosts] == ["rolled_back", "pending", "pending"]
    assert result.reason == "health check failed on a after installing acme-web=1.2.0"
    assert result.reject == [("acme-web", "1.2.0")]


def test_good_ring_ramps_up_and_completes_every_wave(settings: Settings, audit: AuditLog) -> None:
    fakes = {f"h{i}": FakeDebian({"acme-web": "1.0.0"}) for i in range(5)}
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def counting(fake: FakeDebian) -> Callable[[tuple[str, ...]], CommandResult]:
        def respond(argv: tuple[str, ...]) -> CommandResult:
            nonlocal in_flight, peak
            if argv[0] == "dpkg" and argv[1] == "--audit" and fake.installs == []:
                with lock:
                    in_flight += 1
                    peak = max(peak, in_flight)
                time.sleep(0.02)
                with lock:
                    in_flight -= 1
            return fake(argv)

        return respond

    hosts = [_host(name) for name in fakes]
    result = deploy_ring(
        hosts,
        {h.name: [_item(h.name, "1.1.0")] for h in hosts},
        settings,
        _policy((1, "50%"), 2, 0),
        lambda host: [CHECK],
        dry_run=False,
        audit=audit,
        transport_factory=lambda host, s: ScriptedTransport(counting(fakes[host.name]), host.name),
    )
    assert not result.halted
    assert result.ok
    assert result.waves == (("h0",), ("h1", "h2"), ("h3", "h4"))
    assert [h.status for h in result.hosts] == ["installed"] * 5
    assert peak <= 2
    assert result.reject == []


def test_hosts_without_items_are_skipped_not_dispatched(
    settings: Settings, audit: AuditLog
) -> None:
    fakes = {"a": FakeDebian({"acme-web": "1.0.0"})}
    hosts = [_host("a"), _host("idle")]
    result = deploy_ring(
        hosts,
        {"a": [_item("a", "1.1.0")]},
        settings,
        _policy((2,), 2, 0),
        lambda host: [CHECK],
        dry_run=False,
        audit=audit,
        transport_factory=_factory(fakes),
    )
    assert [(h.host, h.status) for h in result.hosts] == [("a", "installed"), ("idle", "skipped")]
    assert not result.halted


def test_dry_run_ring_leaves_every_host_pending(settings: Settings, audit: AuditLog) -> None:
    fakes = {name: FakeDebian({"acme-web": "1.0.0"}) for name in ("a", "b")}
    hosts = [_host(n) for n in fakes]
    result = deploy_ring(
        hosts,
        {h.name: [_item(h.name, "1.2.0")] for h in hosts},
        settings,
        _policy((2,), 2, 0),
        lambda host: [CHECK],
        dry_run=True,
        audit=audit,
        transport_factory=_factory(fakes),
    )
    assert [h.status for h in result.hosts] == ["pending", "pending"]
    assert all(f.installs == [] for f in fakes.values())
    assert not result.halted


def test_host_deployment_round_trips_through_json(settings: Settings, audit: AuditLog) -> None:
    result = _deploy(FakeDebian({"acme-web": "1.0.0"}), [_item("h1", "1.2.0")], settings, audit)
    again = HostDeployment.model_validate_json(result.model_dump_json())
    assert again == result


class _RecordingHooks(RingHooks):
    """Ring hooks as one object: checks, a start gate after ``allow`` hosts, records."""

    def __init__(self, allow: int) -> None:
        self.allow = allow
        self.started: list[str] = []
        self.done: list[str] = []
        self.asked_approval: list[str] = []

    def checks_for(self, host: Host) -> list[AnyCheck]:
        return [CHECK]

    def may_start(self) -> str | None:
        return None if len(self.started) < self.allow else "window closed"

    def approved(self, host: Host) -> bool:
        self.asked_approval.append(host.name)
        return False

    def on_host_start(self, host: Host) -> None:
        self.started.append(host.name)

    def on_host_done(self, deployment: HostDeployment) -> None:
        self.done.append(deployment.host)


def test_ring_hooks_object_replaces_the_callbacks(settings: Settings, audit: AuditLog) -> None:
    fakes = {name: FakeDebian({"acme-web": "1.0.0"}) for name in ("a", "b", "c")}
    hosts = [_host(n) for n in fakes]
    hooks = _RecordingHooks(allow=2)
    result = deploy_ring(
        hosts,
        {h.name: [_item(h.name, "1.1.0")] for h in hosts},
        settings,
        _policy((3,), 1, 0),
        dry_run=False,
        audit=audit,
        transport_factory=_factory(fakes),
        hooks=hooks,
    )
    assert hooks.started == ["a", "b"]
    assert hooks.done == ["a", "b", "c"]
    assert hooks.asked_approval == ["a", "b"]
    assert [h.status for h in result.hosts] == ["installed", "installed", "pending"]
    assert result.halted
    assert result.reason == "window closed"
    assert all(f.health_checks for f in (fakes["a"], fakes["b"]))


def test_ring_hooks_and_callbacks_are_exclusive(settings: Settings, audit: AuditLog) -> None:
    with pytest.raises(ConfigError, match="not both"):
        deploy_ring(
            [_host("a")], {}, settings, _policy((1,), 1, 0), lambda host: [CHECK],
            dry_run=False, audit=audit, hooks=RingHooks(),
        )  # fmt: skip
